//! Why running a workflow did not give a result.

use crate::log::{Handler, LogError, RunState};
use crate::step::StepError;

/// A failure of one step's invoke or compensation.
#[derive(Debug, Clone)]
pub struct StepFailure {
    pub step: String,
    pub handler: Handler,
    pub error: StepError,
}

/// Why running a workflow did not give a result.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// A step failed (the run was then compensated: see `state`).
    #[error("workflow {workflow} ({transaction_id}) {state}: {}", first_message(errors))]
    Failed {
        workflow: String,
        transaction_id: String,
        state: RunState,
        errors: Vec<StepFailure>,
    },
    #[error("no workflow named {0} is registered")]
    UnknownWorkflow(String),
    #[error("a workflow named {0} is already registered")]
    AlreadyRegistered(String),
    #[error("invalid workflow: {0}")]
    Definition(String),
    #[error("{0}")]
    Hook(String),
    #[error("run {transaction_id} of workflow {workflow} is still in progress")]
    InProgress { workflow: String, transaction_id: String },
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Log(#[from] LogError),
}

fn first_message(errors: &[StepFailure]) -> String {
    errors
        .first()
        .map(|f| format!("step {} failed: {}", f.step, f.error))
        .unwrap_or_default()
}

impl FlowError {
    /// The first step error of a failed run (the one that started compensation).
    pub fn step_error(&self) -> Option<&StepError> {
        match self {
            FlowError::Failed { errors, .. } => errors
                .iter()
                .find(|f| f.handler == Handler::Invoke)
                .or_else(|| errors.first())
                .map(|f| &f.error),
            _ => None,
        }
    }
}
