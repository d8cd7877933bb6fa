//! `GET /slots`: what each slot is doing (needs `--slots`).

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use llama_runtime::{SlotInfo, SlotState};
use serde::{Deserialize, Serialize};

use crate::error::AppError;
use crate::state::AppState;

/// `GET /slots` query.
#[derive(Debug, Deserialize)]
pub struct SlotsQuery {
    /// `1`: answer 503 when no slot is free.
    pub fail_on_no_slot: Option<String>,
}

/// One slot, in llama.cpp's shape.
#[derive(Debug, Serialize)]
struct Slot {
    id: u32,
    /// The request it serves, -1 when none.
    id_task: i64,
    is_processing: bool,
    n_cached: u32,
    n_ctx: u32,
    n_prompt_tokens: u32,
    next_token: SlotProgress,
    speculative: bool,
    state: &'static str,
}

/// `next_token` of a slot.
#[derive(Debug, Serialize)]
struct SlotProgress {
    n_decoded: u32,
}

impl Slot {
    fn new(s: &SlotInfo, n_ctx: u32) -> Slot {
        Slot {
            id: s.id,
            id_task: s.request_id.map_or(-1, |r| r as i64),
            is_processing: s.state != SlotState::Idle,
            n_cached: s.n_cached,
            n_ctx,
            n_prompt_tokens: s.n_prompt,
            next_token: SlotProgress { n_decoded: s.n_decoded },
            speculative: false,
            state: match s.state {
                SlotState::Idle => "idle",
                SlotState::Prefill => "prefill",
                SlotState::Decode => "decode",
            },
        }
    }
}

/// `GET /slots`
pub(crate) async fn slots(State(state): State<AppState>, Query(q): Query<SlotsQuery>) -> Result<Response, AppError> {
    if !state.settings().slots {
        return Err(AppError::NotSupported(
            "This server does not support slots endpoint. Start it with `--slots`".into(),
        ));
    }
    let ready = state.ready()?;
    let slots = ready.engine.slots();
    let fail = q.fail_on_no_slot.as_deref().is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if fail && slots.iter().all(|s| s.state != SlotState::Idle) {
        return Err(AppError::unavailable("no slot available", Some(1)));
    }
    let body: Vec<Slot> = slots.iter().map(|s| Slot::new(s, ready.n_ctx_seq)).collect();
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_wire_order;

    #[test]
    fn wire_order() {
        let slot = Slot {
            id: 1,
            id_task: 7,
            is_processing: true,
            n_cached: 3,
            n_ctx: 512,
            n_prompt_tokens: 9,
            next_token: SlotProgress { n_decoded: 2 },
            speculative: false,
            state: "decode",
        };
        assert_wire_order(&vec![slot]);
    }
}
