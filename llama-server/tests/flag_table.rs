//! The flag table against its spec, llama.cpp's server README (the flag
//! tables between `HELP_START` and `HELP_END`), against clap, and against
//! `docs/SERVER.md`. Parsing only: no process, no model.
//!
//! `FLAGS_BLESS=1 cargo test -p llama-server --test flag_table` rewrites the
//! table in `docs/SERVER.md`.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use clap::CommandFactory;
use clap::error::ErrorKind;
use llama_server::{Args, FLAGS, Flag, FlagClass, FlagParser};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/SmolLM2-135M-Instruct.Q4_1.gguf");

/// One row of the README: its spellings, whether it takes a value, its
/// environment variables.
#[derive(Debug)]
struct Row {
    spellings: Vec<String>,
    takes_value: bool,
    env: Vec<String>,
}

/// The rows of the README's flag tables (`| \`-ub, --ubatch-size N\` | ... (env: X) |`).
fn readme_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(repo("vendor/llama.cpp/tools/server/README.md")).expect("vendored README");
    let start = text.find("<!-- HELP_START -->").expect("HELP_START");
    let end = text.find("<!-- HELP_END -->").expect("HELP_END");
    let mut rows = Vec::new();
    for line in text[start..end].lines() {
        let Some(rest) = line.strip_prefix("| `") else { continue };
        let (usage, explanation) = rest.split_once("` | ").expect("a flag row has two cells");
        // Spellings are `-x` / `--xyz` separated by ", "; the value
        // placeholder follows the last one after a space (and may hold commas).
        let mut spellings = Vec::new();
        let mut tail = usage;
        loop {
            let end = tail.find([',', ' ']).unwrap_or(tail.len());
            let spelling = &tail[..end];
            assert!(spelling.starts_with('-'), "not a flag: {spelling:?} in {line}");
            spellings.push(spelling.to_string());
            tail = &tail[end..];
            match tail.strip_prefix(", ") {
                Some(next) if next.starts_with('-') => tail = next,
                _ => break,
            }
        }
        let takes_value = !tail.trim().is_empty();
        let env = explanation
            .match_indices("(env: ")
            .map(|(i, _)| {
                let rest = &explanation[i + "(env: ".len()..];
                rest[..rest.find(')').expect("closing parenthesis")].to_string()
            })
            .collect();
        rows.push(Row { spellings, takes_value, env });
    }
    rows
}

fn row_of(spelling: &str) -> &'static Flag {
    FLAGS.iter().find(|f| f.spellings().any(|s| s == spelling)).unwrap_or_else(|| panic!("{spelling} is in no row"))
}

#[test]
fn the_readme_is_read() {
    let rows = readme_rows();
    assert!(rows.len() > 200, "only {} rows: did the README's format change?", rows.len());
    let all: usize = rows.iter().map(|r| r.spellings.len()).sum();
    assert!(all > rows.len());
    assert!(rows.iter().any(|r| r.spellings == ["-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified"]));
    assert!(rows.iter().any(|r| r.env == ["LLAMA_ARG_UBATCH"]));
}

/// Every README row is one table row with the same spellings, value and
/// variable; every llama.cpp row of the table is in the README.
#[test]
fn every_readme_flag_and_variable_is_in_the_table() {
    let rows = readme_rows();
    let mut covered = HashSet::new();
    for row in &rows {
        let flag = row_of(&row.spellings[0]);
        let ours: BTreeSet<&str> = flag.spellings().collect();
        let theirs: BTreeSet<&str> = row.spellings.iter().map(String::as_str).collect();
        assert_eq!(ours, theirs, "spellings of {}", row.spellings[0]);
        assert_eq!(flag.value.is_some(), row.takes_value, "value of {}", row.spellings[0]);
        assert_eq!(
            flag.env.map(str::to_string).into_iter().collect::<Vec<_>>(),
            row.env,
            "env of {}",
            row.spellings[0]
        );
        assert!(!flag.ours, "{} is llama.cpp's", row.spellings[0]);
        covered.insert(flag.primary());
    }
    for flag in FLAGS.iter().filter(|f| !f.ours) {
        assert!(covered.contains(flag.primary()), "{} is not in the README", flag.primary());
    }
}

/// A value clap accepts for a flag that takes one.
fn sample_value(flag: &Flag) -> &'static str {
    match flag.primary() {
        "--cache-type-k" | "--cache-type-v" => "q8_0",
        "--load-mode" => "mmap",
        "--log-colors" | "--flash-attn" => "off",
        "--pooling" => "mean",
        "--logit-bias" => "1+1",
        "--chat-template-kwargs" => "{}",
        _ => "1",
    }
}

/// Every spelling of the README parses (as a negation, with a value, or
/// with `=value`), and lands where its class says: in clap's field, in the
/// ignored notices, in the refusals, or in an exit.
#[test]
fn every_readme_spelling_parses() {
    for row in readme_rows() {
        for spelling in &row.spellings {
            let flag = row_of(spelling);
            let negation = flag.negations.contains(&spelling.as_str());
            let mut forms = vec![];
            if flag.values == 0 || negation {
                forms.push(vec![spelling.clone()]);
            } else {
                let values = vec![sample_value(flag).to_string(); flag.values.into()];
                forms.push(std::iter::once(spelling.clone()).chain(values.iter().cloned()).collect());
                if flag.values == 1 {
                    forms.push(vec![format!("{spelling}={}", values[0])]);
                }
            }
            for form in forms {
                let argv = ["llama-server", "-m", MODEL].into_iter().map(String::from).chain(form.iter().cloned());
                let parsed = Args::try_parse_argv(argv);
                match flag.parser {
                    FlagParser::Exit(_) => {
                        assert_eq!(parsed.unwrap_err().kind(), ErrorKind::DisplayVersion, "{form:?}")
                    }
                    FlagParser::Clap("help") => assert_eq!(parsed.unwrap_err().kind(), ErrorKind::DisplayHelp),
                    FlagParser::Clap("version") => assert_eq!(parsed.unwrap_err().kind(), ErrorKind::DisplayVersion),
                    _ => {
                        let args = parsed.unwrap_or_else(|e| panic!("{form:?} does not parse: {e}"));
                        check_class(flag, spelling, &form, args);
                    }
                }
            }
        }
    }
}

fn check_class(flag: &Flag, spelling: &str, form: &[String], args: Args) {
    match (flag.class, flag.parser) {
        (FlagClass::Refused, _) => {
            let err = args.validate().expect_err("refused");
            let line = err.to_string();
            assert!(line.starts_with(spelling) && line.contains(flag.note), "{form:?}: {line}");
        }
        (FlagClass::Accepted, _) => {
            // A value the settings check may still refuse (a grammar "1");
            // otherwise the flag is one startup line.
            if let Ok(s) = args.validate() {
                let line = s.ignored_flags.iter().find(|l| l.contains(flag.note));
                assert!(line.is_some(), "{form:?}: no startup line in {:?}", s.ignored_flags);
            }
        }
        (FlagClass::Implemented, _) => {
            if let Ok(s) = args.validate() {
                assert!(!s.ignored_flags.iter().any(|l| l.starts_with(spelling)), "{form:?}: {:?}", s.ignored_flags);
            }
        }
    }
}

/// clap knows exactly the spellings of the rows it parses, with the same
/// variables; the table knows every clap flag.
#[test]
fn clap_and_the_table_agree() {
    let mut cmd = Args::command();
    cmd.build();
    let spelled = |arg: &clap::Arg, s: &str| -> bool {
        if let Some(long) = s.strip_prefix("--") {
            arg.get_long() == Some(long) || arg.get_all_aliases().is_some_and(|a| a.contains(&long))
        } else {
            s.len() == 2 && arg.get_short() == s.chars().nth(1)
        }
    };
    let mut table_ids = HashSet::new();
    for flag in FLAGS {
        match flag.parser {
            FlagParser::Clap(id) => {
                for (id, group) in [(id.to_string(), flag.names), (format!("no_{id}"), flag.negations)] {
                    if group.is_empty() {
                        continue;
                    }
                    let arg = cmd.get_arguments().find(|a| a.get_id() == id.as_str());
                    let arg = arg.unwrap_or_else(|| panic!("{}: no clap field {id}", flag.primary()));
                    table_ids.insert(id.clone());
                    for s in group.iter().filter(|s| s.starts_with("--") || s.len() == 2) {
                        // `--usage` is rewritten to `--help` before clap.
                        assert!(*s == "--usage" || spelled(arg, s), "clap's {id} does not know {s}");
                    }
                    if group == flag.names
                        && let Some(env) = flag.env
                    {
                        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(env), "env of {id}");
                    }
                }
            }
            FlagParser::Table | FlagParser::Exit(_) => {
                for s in flag.spellings() {
                    assert!(!cmd.get_arguments().any(|a| spelled(a, s)), "{s} is parsed by the table and by clap");
                }
            }
        }
    }
    for arg in cmd.get_arguments() {
        assert!(table_ids.contains(arg.get_id().as_str()), "clap's {} is not in the flag table", arg.get_id());
    }
}

#[test]
fn unknown_flags_stay_errors() {
    // `--no-mmap` and `--mlock` are older llama.cpp spellings; this README has `--load-mode`.
    for flag in ["--no-such-flag", "--no-mmap", "--mlock", "-zz"] {
        let err = Args::try_parse_argv(["llama-server", "-m", MODEL, flag]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownArgument, "{flag}");
        assert_eq!(err.exit_code(), 2);
    }
}

#[test]
fn accepted_flags_in_every_form() {
    let argv = [
        "llama-server",
        "-m",
        MODEL,
        "--cpu-mask=ff",
        "-Cr",
        "0-3",
        "--prio",
        "-1",
        "-no-kvu",
        "--kv-unified",
        "--no-webui",
        "--numa",
        "distribute",
        "--ssl-key-file",
        "k.pem",
        "--control-vector-layer-range",
        "1",
        "4",
        "-sps",
        "0.5",
        "--reasoning-format=none",
        "--no-mmproj",
        "-np",
        "2",
    ];
    let s = Args::try_parse_argv(argv).unwrap().validate().unwrap();
    assert_eq!(s.parallel, 2);
    // (Variables such as HF_TOKEN in the test's own environment add lines named after them.)
    let flags: Vec<&str> =
        s.ignored_flags.iter().map(|l| l.split(':').next().unwrap()).filter(|f| f.starts_with('-')).collect();
    assert_eq!(
        flags,
        [
            "--cpu-mask",
            "-Cr",
            "--prio",
            "-no-kvu",
            "--kv-unified",
            "--no-webui",
            "--numa",
            "--ssl-key-file",
            "--control-vector-layer-range",
            "-sps",
            "--reasoning-format",
            "--no-mmproj"
        ]
    );
    assert!(s.ignored_flags.iter().all(|l| l.contains(": no effect here: ")), "{:?}", s.ignored_flags);
}

#[test]
fn flag_table_in_docs_is_current() {
    const START: &str = "<!-- FLAG_TABLE_START: generated from llama-server/src/flags.rs -->\n";
    const END: &str = "<!-- FLAG_TABLE_END -->";
    let path = repo("docs/SERVER.md");
    let doc = std::fs::read_to_string(&path).expect("docs/SERVER.md");
    let start = doc.find(START).expect("docs/SERVER.md lacks the FLAG_TABLE_START marker") + START.len();
    let end = start + doc[start..].find(END).expect("FLAG_TABLE_END marker");
    let table = llama_server::markdown_table();
    if std::env::var_os("FLAGS_BLESS").is_some() {
        std::fs::write(&path, format!("{}{table}{}", &doc[..start], &doc[end..])).expect("write docs/SERVER.md");
        return;
    }
    assert!(
        doc[start..end] == table,
        "docs/SERVER.md's flag table is stale: run `FLAGS_BLESS=1 cargo test -p llama-server --test flag_table`"
    );
}
