//! LoRA adapters: `GET /lora-adapters` (the adapters loaded with `--lora`
//! / `--lora-scaled` and their global scales), `POST /lora-adapters` (set
//! the global scales), and the `lora` field of generation requests (the
//! request's own scales), in llama.cpp's shapes.
//!
//! A list of `{"id", "scale"}` gives the listed adapters their scale and
//! every other one 0, as llama.cpp's `parse_lora_request`. A request
//! without `lora` runs with the global scales of the moment it arrives.

use std::path::Path;

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use llama_runtime::{DynEngine, LoraAdapterInfo, LoraError};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::extract::Json;
use crate::state::AppState;

/// One `{"id": 0, "scale": 0.5}` of a `lora` list.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq)]
pub struct LoraEntry {
    /// The adapter's id (its position among `--lora` / `--lora-scaled`).
    pub id: i64,
    /// Its scale (default 0, as llama.cpp).
    #[serde(default)]
    pub scale: f32,
}

/// One adapter of `GET /lora-adapters`.
#[derive(Debug, Serialize)]
struct AdapterOut {
    id: usize,
    path: String,
    scale: f32,
    task_name: String,
    prompt_prefix: String,
}

impl From<LoraAdapterInfo> for AdapterOut {
    fn from(a: LoraAdapterInfo) -> Self {
        AdapterOut {
            id: a.id,
            path: display(&a.path),
            scale: a.scale,
            task_name: a.task_name,
            prompt_prefix: a.prompt_prefix,
        }
    }
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `(id, scale)` pairs of a `lora` list, ids checked against the `n`
/// loaded adapters; `field` names the list in errors.
fn pairs(field: &str, list: &[LoraEntry], n: usize) -> Result<Vec<(usize, f32)>, AppError> {
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            let id = usize::try_from(e.id).ok().filter(|&id| id < n).ok_or_else(|| {
                AppError::invalid(
                    format!("{field}[{i}].id"),
                    format!("invalid adapter id {}: {n} LoRA adapters are loaded (ids 0..{n})", e.id),
                )
            })?;
            if !e.scale.is_finite() {
                let message = format!("the scale of adapter {id} must be a finite number");
                return Err(AppError::invalid(format!("{field}[{i}].scale"), message));
            }
            Ok((id, e.scale))
        })
        .collect()
}

/// The scale of every loaded adapter a request runs with: its own `lora`
/// list (unlisted adapters 0), else the global scales now.
///
/// # Errors
/// A 400 naming `lora[i].id` for an unknown adapter id, `lora[i].scale`
/// for a scale that is not finite.
pub(crate) fn request_scales(
    engine: &dyn DynEngine,
    list: Option<&[LoraEntry]>,
) -> Result<Vec<(usize, f32)>, AppError> {
    let adapters = engine.lora_adapters();
    match list {
        None => Ok(adapters.iter().map(|a| (a.id, a.scale)).collect()),
        Some(list) => {
            let mut scales: Vec<(usize, f32)> = adapters.iter().map(|a| (a.id, 0.0)).collect();
            for (id, scale) in pairs("lora", list, adapters.len())? {
                scales[id].1 = scale;
            }
            Ok(scales)
        }
    }
}

/// `GET /lora-adapters`
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, AppError> {
    let ready = state.ready()?;
    let adapters: Vec<AdapterOut> = ready.engine.lora_adapters().into_iter().map(AdapterOut::from).collect();
    Ok(JsonResponse(adapters).into_response())
}

/// `POST /lora-adapters`: `[{"id", "scale"}]` replaces the global scales.
pub(crate) async fn set(
    State(state): State<AppState>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, AppError> {
    // JSON syntax first (a 400 that says so), then the shape, naming the field.
    if !body.is_array() {
        return Err(AppError::bad_request(r#"the request body must be an array of {"id", "scale"}"#));
    }
    let list: Vec<LoraEntry> = crate::extract::parse(body.to_string().as_bytes())?;
    let ready = state.ready()?;
    let n = ready.engine.lora_adapters().len();
    let scales = pairs("", &list, n)?;
    ready.engine.set_lora_scales(&scales).map_err(|e| match e {
        LoraError::UnknownAdapter { .. } => AppError::invalid("id", e.to_string()),
        _ => AppError::invalid("scale", e.to_string()),
    })?;
    Ok(JsonResponse(serde_json::json!({ "success": true })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_as_llama_cpp_sends_them() {
        let list: Vec<LoraEntry> = serde_json::from_str(r#"[{"id": 0, "scale": 0.5}, {"id": 1}]"#).unwrap();
        assert_eq!(list, [LoraEntry { id: 0, scale: 0.5 }, LoraEntry { id: 1, scale: 0.0 }]);
        assert_eq!(pairs("lora", &list, 2).unwrap(), [(0, 0.5), (1, 0.0)]);
        for bad in [LoraEntry { id: 2, scale: 1.0 }, LoraEntry { id: -1, scale: 1.0 }] {
            assert!(pairs("lora", &[bad], 2).is_err(), "{bad:?}");
        }
        assert!(pairs("lora", &[LoraEntry { id: 0, scale: f32::INFINITY }], 2).is_err());
    }
}
