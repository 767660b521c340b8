//! How this scaler's errors become gRPC statuses for KEDA.

use grpcio::{RpcStatus, RpcStatusCode};

use crate::evaluate::EvalError;
use crate::trigger::ConfigError;

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
