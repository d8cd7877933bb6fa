//! Fuzz target `chat_template`: hostile templates and hostile messages
//! through llama-core's sandboxed chat templates (`ChatTemplate::new` and
//! `render`). Never a panic or a hang (fuel), output within the documented
//! cap; known templates render hostile messages exactly as written (message
//! text is data, never template code).
//!
//! Input: byte 0 holds flags (bit 0: `add_generation_prompt`; bits 1–2: the
//! template: 0 = the template is the first field of the input, 1 = the
//! default model's (SmolLM2) template, 2 = the server's built-in ChatML,
//! 3 = a template using loops, filters, methods and `namespace`); the rest
//! is split at 0xFF bytes into fields (lossy UTF-8): [template,] then
//! role, content, role, content, ...
//!
//! Compiled into the fuzz crate and into llama-core's corpus-replay test;
//! the includer provides `crate::chat::{ChatMessage, ChatTemplate}`.

use crate::chat::{ChatMessage, ChatTemplate};

/// The default model's `tokenizer.chat_template` (SmolLM2-135M-Instruct).
pub const SMOLLM2_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// llama-server's built-in `chatml` template (`BUILTIN_TEMPLATES`).
pub const CHATML_TEMPLATE: &str = "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}";

/// Exercises what real tool-calling templates use: namespaces, loop
/// controls, filters, Python string methods, `tojson`, `raise_exception`.
pub const FEATURE_TEMPLATE: &str = r#"{%- set ns = namespace(system='', n=0) -%}
{%- for m in messages -%}
  {%- if m.role == 'system' -%}{%- set ns.system = ns.system + m.content | trim -%}{%- continue -%}{%- endif -%}
  {%- if m.role not in ['user', 'assistant', 'tool'] and m.role | length > 64 -%}{{ raise_exception('bad role ' ~ m.role[:10]) }}{%- endif -%}
  {%- set ns.n = ns.n + 1 -%}
  [{{ loop.index }}|{{ m.role | upper }}|{{ m.content.split('\n') | length }}]{{ m.content.strip() | replace('<', '&lt;') }}
  {{- ' ' ~ (m | tojson) if m.role == 'tool' else '' }}{{ eos_token }}
  {%- if ns.n > 1000 -%}{%- break -%}{%- endif -%}
{%- endfor -%}
{%- if ns.system -%}<<SYS>>{{ ns.system.lower() }}{%- endif -%}
{%- if add_generation_prompt -%}{{ bos_token }}{%- endif -%}"#;

/// The cap `ChatTemplate::render` documents (`MAX_OUTPUT_BASE_BYTES` of chat.rs).
const OUTPUT_BASE_BYTES: usize = 1 << 20;

/// Run one input.
pub fn chat_template(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let add_generation_prompt = flags & 1 != 0;
    let mut fields = rest.split(|&b| b == 0xFF).map(|f| String::from_utf8_lossy(f).into_owned());
    let source = match (flags >> 1) & 3 {
        0 => fields.next().unwrap_or_default(),
        1 => SMOLLM2_TEMPLATE.to_owned(),
        2 => CHATML_TEMPLATE.to_owned(),
        _ => FEATURE_TEMPLATE.to_owned(),
    };
    let fields: Vec<String> = fields.collect();
    let messages: Vec<ChatMessage> = fields
        .chunks(2)
        .map(|pair| ChatMessage::new(pair[0].clone(), pair.get(1).cloned().unwrap_or_default()))
        .collect();

    let template = match ChatTemplate::new(&source, "<|im_start|>", "<|im_end|>") {
        Ok(t) => t,
        Err(e) => {
            assert!((flags >> 1) & 3 == 0, "a known template did not compile: {e}");
            return;
        }
    };
    let result = template.render(&messages, add_generation_prompt);
    let input: usize = messages.iter().map(|m| m.role.len() + m.content.len()).sum();
    if let Ok(out) = &result {
        assert!(out.len() <= OUTPUT_BASE_BYTES + 2 * input, "{} bytes of output", out.len());
    }
    let expected = match (flags >> 1) & 3 {
        1 => Some(smollm2(&messages, add_generation_prompt)),
        2 => Some(chatml(&messages, add_generation_prompt)),
        _ => None,
    };
    if let Some(expected) = expected {
        match result {
            Ok(out) => assert!(out == expected, "rendered {out:?}, expected {expected:?}"),
            Err(e) => panic!("a known template failed on plain messages: {e}"),
        }
    }
}

fn chatml(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

fn smollm2(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    if messages.first().is_some_and(|m| m.role != "system") {
        out.push_str(
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n",
        );
    }
    out + &chatml(messages, add_generation_prompt)
}
