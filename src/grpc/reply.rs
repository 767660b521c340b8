//! How gRPC replies are sent: status codes for this scaler's errors, and
//! the one way a unary handler replies. Not the health service (`health`).

use grpcio::{RpcContext, RpcStatus, RpcStatusCode, UnarySink};

use crate::scaling::outcome::EvalError;
use crate::scaling::trigger::ConfigError;

pub fn eval_status(error: &EvalError) -> RpcStatus {
    let code = match error {
        EvalError::InvalidArgument(_) => RpcStatusCode::INVALID_ARGUMENT,
        EvalError::Unavailable(_) => RpcStatusCode::UNAVAILABLE,
    };
    RpcStatus::with_message(code, error.message().to_string())
}

pub fn config_status(error: &ConfigError) -> RpcStatus {
    RpcStatus::with_message(RpcStatusCode::INVALID_ARGUMENT, error.to_string())
}

/// Sends a unary answer or failure without blocking the handler.
pub fn reply<T: Send + 'static>(
    ctx: &RpcContext,
    sink: UnarySink<T>,
    result: Result<T, RpcStatus>,
) {
    ctx.spawn(answer(sink, result));
}

/// Sends a unary answer or failure; for handlers that await something first.
pub async fn answer<T: Send>(sink: UnarySink<T>, result: Result<T, RpcStatus>) {
    let sending = match result {
        Ok(response) => sink.success(response),
        Err(status) => sink.fail(status),
    };
    if let Err(e) = sending.await {
        log::debug!("reply not delivered: {e}");
    }
}
