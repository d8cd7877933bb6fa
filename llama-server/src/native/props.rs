//! `GET /props`: the server's settings and defaults, in llama.cpp's shape.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::generation_settings::{GenerationSettings, RunSettings};
use crate::error::AppError;
use crate::state::AppState;

/// Reported as `build_info`.
pub(crate) const BUILD_INFO: &str = concat!("llama.rs ", env!("CARGO_PKG_VERSION"));

/// The `/props` body.
#[derive(Debug, Serialize)]
struct Props<'a> {
    bos_token: &'a str,
    build_info: &'static str,
    chat_template: &'a str,
    /// Always `{}`.
    chat_template_caps: TemplateCaps,
    default_generation_settings: DefaultSlot,
    embeddings: bool,
    endpoint_metrics: bool,
    endpoint_slots: bool,
    eos_token: &'a str,
    is_sleeping: bool,
    /// The text that stands for an image or audio part in a prompt
    /// (llama.cpp's default; no projector is loaded here).
    media_marker: &'static str,
    modalities: Modalities,
    model_alias: String,
    model_path: String,
    total_slots: u32,
}

/// `chat_template_caps`: none are reported (an empty object, not `null`).
#[derive(Debug, Serialize)]
struct TemplateCaps {}

/// `default_generation_settings`: an idle slot with the server's defaults.
#[derive(Debug, Serialize)]
struct DefaultSlot {
    id: u32,
    id_task: i64,
    is_processing: bool,
    n_ctx: u32,
    next_token: NextToken,
    params: GenerationSettings,
    prompt: &'static str,
    speculative: bool,
}

/// `next_token` of an idle slot.
#[derive(Debug, Serialize)]
struct NextToken {
    has_new_line: bool,
    has_next_token: bool,
    n_decoded: u32,
    n_remain: i64,
    stopping_word: &'static str,
}

/// The input kinds the model takes besides text: none.
#[derive(Debug, Serialize)]
struct Modalities {
    audio: bool,
    vision: bool,
}

/// `GET /props`
pub(crate) async fn props(State(state): State<AppState>) -> Result<Response, AppError> {
    let ready = state.ready()?;
    let s = state.settings();
    let model = state.model_id();
    let lora = crate::lora::request_scales(&*ready.engine, None)?;
    let run = RunSettings {
        n_predict: ready.n_predict,
        stop: &[],
        n_probs: 0,
        ignore_eos: ready.request_defaults.ignore_eos,
        stream: false,
        n_keep: ready.request_defaults.n_keep,
        n_discard: 0,
        lora: &lora,
    };
    let params = GenerationSettings::new(&ready.defaults, &run, ready.n_ctx_seq, &model);
    let body = Props {
        bos_token: &ready.bos_text,
        build_info: BUILD_INFO,
        chat_template: &ready.template_source,
        chat_template_caps: TemplateCaps {},
        default_generation_settings: DefaultSlot {
            id: 0,
            id_task: -1,
            is_processing: false,
            n_ctx: ready.n_ctx_seq,
            next_token: idle_next_token(),
            params,
            prompt: "",
            speculative: false,
        },
        embeddings: s.embeddings,
        endpoint_metrics: s.metrics,
        endpoint_slots: s.slots,
        eos_token: &ready.eos_text,
        is_sleeping: false,
        media_marker: MEDIA_MARKER,
        modalities: Modalities { audio: false, vision: false },
        model_alias: model,
        model_path: s.model_path.display().to_string(),
        total_slots: s.parallel,
    };
    Ok(Json(body).into_response())
}

/// llama.cpp's default media marker.
const MEDIA_MARKER: &str = "<__media__>";

/// `POST /props`: with `--props`, accepted (llama.cpp defines no property
/// that can be changed yet) and answered `{"success": true}`; without it, 501.
pub(crate) async fn set_props(State(state): State<AppState>) -> Result<Response, AppError> {
    if !state.settings().props {
        return Err(AppError::NotSupported(
            "This server does not support changing global properties. Start it with `--props`".into(),
        ));
    }
    Ok(Json(serde_json::json!({ "success": true })).into_response())
}

fn idle_next_token() -> NextToken {
    NextToken { has_new_line: false, has_next_token: true, n_decoded: 0, n_remain: -1, stopping_word: "" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::generation_settings::tests::example;
    use crate::test_support::assert_wire_order;

    #[test]
    fn wire_order() {
        assert_wire_order(&Props {
            bos_token: "<s>",
            build_info: BUILD_INFO,
            chat_template: "t",
            chat_template_caps: TemplateCaps {},
            default_generation_settings: DefaultSlot {
                id: 0,
                id_task: -1,
                is_processing: false,
                n_ctx: 512,
                next_token: idle_next_token(),
                params: example(),
                prompt: "",
                speculative: false,
            },
            embeddings: true,
            endpoint_metrics: false,
            endpoint_slots: true,
            eos_token: "</s>",
            is_sleeping: false,
            media_marker: MEDIA_MARKER,
            modalities: Modalities { audio: false, vision: false },
            model_alias: "m".into(),
            model_path: "/m.gguf".into(),
            total_slots: 4,
        });
        assert_eq!(serde_json::to_string(&TemplateCaps {}).unwrap(), "{}");
    }
}
