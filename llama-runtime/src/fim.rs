//! Fill-in-the-middle prompts: what llama.cpp's `/infill` builds from a
//! code prefix, a suffix and extra context, with the model's FIM tokens.

use llama_core::Token;

use crate::inference::ModelFacade;
use crate::request::CoreError;

/// One infill request's text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Infill {
    /// The code before the gap.
    pub prefix: String,
    /// The code after the gap.
    pub suffix: String,
    /// Text the answer starts with (after the FIM middle token).
    pub prompt: String,
    /// Extra context before the prefix: `(file name, text)` chunks.
    pub extra: Vec<(String, String)>,
}

/// Why an infill prompt could not be built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InfillError {
    /// The model lacks the prefix, suffix or middle token.
    #[error("this model has no fill-in-the-middle tokens (FIM prefix, suffix and middle); /infill needs a code model")]
    NoFimTokens,
    /// A text could not be tokenized.
    #[error("{field}: {source}")]
    Tokenize {
        /// Which: `prefix`, `suffix`, `prompt` or `extra`.
        field: &'static str,
        /// Why.
        source: CoreError,
    },
}

impl Infill {
    /// The prompt tokens, laid out as llama.cpp's server does:
    /// `[BOS] extra <FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID> prompt`,
    /// where with the repository tokens (`FIM_REP`, `FIM_SEP`) the extra
    /// context is `<FIM_REP>myproject\n` then `<FIM_SEP>name\ntext` per
    /// chunk and `<FIM_SEP>filename\n`, and without them just the chunks'
    /// text. The prefix keeps its last `3/4 * budget` tokens, the suffix
    /// its first `budget/4 - 2 - prompt` tokens, and the extra context its
    /// last tokens that still fit in `limit` (the context window less room
    /// to generate).
    ///
    /// # Errors
    /// [`InfillError::NoFimTokens`] for a model without FIM tokens;
    /// [`InfillError::Tokenize`] when a text cannot be tokenized.
    pub fn tokens(&self, model: &dyn ModelFacade, budget: usize, limit: usize) -> Result<Vec<Token>, InfillError> {
        let fim = model.info().fim;
        let (Some(pre), Some(suf), Some(mid)) = (fim.pre, fim.suf, fim.mid) else {
            return Err(InfillError::NoFimTokens);
        };
        let tok_in = |field: &'static str| {
            move |text: &str| {
                model.tokenize(text, false, false).map_err(|source| InfillError::Tokenize { field, source })
            }
        };
        let tok = tok_in("extra");
        let mut extra = Vec::new();
        if let (Some(rep), Some(sep)) = (fim.rep, fim.sep) {
            extra.push(rep);
            extra.extend(tok("myproject\n")?);
            for (name, text) in &self.extra {
                extra.push(sep);
                extra.extend(tok(&format!("{name}\n"))?);
                extra.extend(tok(text)?);
            }
            extra.push(sep);
            extra.extend(tok("filename\n")?);
        } else {
            for (_, text) in &self.extra {
                extra.extend(tok(text)?);
            }
        }
        let prompt = tok_in("prompt")(&self.prompt)?;
        let prefix = tok_in("prefix")(&self.prefix)?;
        let suffix = tok_in("suffix")(&self.suffix)?;
        let n_prefix = prefix.len().min(3 * (budget / 4));
        let n_suffix = suffix.len().min((budget / 4).saturating_sub(2 + prompt.len()));

        let mut body = vec![pre];
        body.extend_from_slice(&prefix[prefix.len() - n_prefix..]);
        body.push(suf);
        body.extend_from_slice(&suffix[..n_suffix]);
        body.push(mid);
        body.extend(prompt);

        // BOS where the model wants one: what tokenizing nothing with
        // `add_special` gives.
        let mut out =
            model.tokenize("", true, false).map_err(|source| InfillError::Tokenize { field: "prompt", source })?;
        let n_extra = extra.len().min(limit.saturating_sub(out.len() + body.len()));
        out.extend_from_slice(&extra[extra.len() - n_extra..]);
        out.extend(body);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use llama_core::FimTokens;

    use super::*;
    use crate::fake::{FAKE_BOS, FakeModel};

    // In the fake's vocabulary 2..=27 are a..z; these stand for the FIM tokens.
    const PRE: Token = 30;
    const SUF: Token = 31;
    const MID: Token = 60;
    const REP: Token = 61;
    const SEP: Token = 62;

    fn fake(repo: bool) -> FakeModel {
        FakeModel::default().with_info(|i| {
            i.fim = FimTokens {
                pre: Some(PRE),
                suf: Some(SUF),
                mid: Some(MID),
                rep: repo.then_some(REP),
                sep: repo.then_some(SEP),
                pad: None,
            };
        })
    }

    fn t(text: &str) -> Vec<Token> {
        FakeModel::default().tokenize(text, false, false).unwrap()
    }

    fn infill() -> Infill {
        Infill {
            prefix: "abcd".into(),
            suffix: "efgh".into(),
            prompt: "x".into(),
            extra: vec![("f".into(), "yz".into())],
        }
    }

    #[test]
    fn layout_without_repository_tokens() {
        let got = infill().tokens(&fake(false), 512, 1000).unwrap();
        let want = [vec![FAKE_BOS], t("yz"), vec![PRE], t("abcd"), vec![SUF], t("efgh"), vec![MID], t("x")].concat();
        assert_eq!(got, want);
    }

    #[test]
    fn layout_with_repository_tokens() {
        let got = infill().tokens(&fake(true), 512, 1000).unwrap();
        let want = [
            vec![FAKE_BOS, REP],
            t("myproject\n"),
            vec![SEP],
            t("f\n"),
            t("yz"),
            vec![SEP],
            t("filename\n"),
            vec![PRE],
            t("abcd"),
            vec![SUF],
            t("efgh"),
            vec![MID],
            t("x"),
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[test]
    fn budgets_trim_the_prefix_start_the_suffix_end_and_the_extra_start() {
        // budget 8: prefix keeps its last 6 tokens, suffix 8/4 - 2 - 1 = 0.
        let long = Infill { prefix: "abcdefghij".into(), ..infill() };
        let got = long.tokens(&fake(false), 8, 1000).unwrap();
        assert_eq!(got, [vec![FAKE_BOS], t("yz"), vec![PRE], t("efghij"), vec![SUF, MID], t("x")].concat());
        // The limit leaves room for one extra token only.
        let got = long.tokens(&fake(false), 8, 12).unwrap();
        assert_eq!(got, [vec![FAKE_BOS], t("z"), vec![PRE], t("efghij"), vec![SUF, MID], t("x")].concat());
    }

    #[test]
    fn a_model_without_fim_tokens_is_refused() {
        assert_eq!(infill().tokens(&FakeModel::default(), 512, 1000), Err(InfillError::NoFimTokens));
    }
}
