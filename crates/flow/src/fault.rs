//! Test-only crash points. With the `fault-injection` feature, `KEYWARD_FAULT` set to
//! `crash:<workflow>:<step>:<before|after>` aborts the process right before that step is invoked
//! (its `invoking` record written) or right after it returned (before its `done` record is
//! written) — the two places where a crash is hardest to recover from. Without the feature this
//! module compiles to nothing.

/// Which side of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Boundary {
    Before,
    After,
}

#[cfg(feature = "fault-injection")]
pub(crate) fn crash_point(workflow: &str, step: &str, boundary: Boundary) {
    use std::sync::OnceLock;
    static PLAN: OnceLock<Option<(String, String, Boundary)>> = OnceLock::new();
    let plan = PLAN.get_or_init(|| {
        let spec = std::env::var("KEYWARD_FAULT").ok()?;
        let mut parts = spec.splitn(4, ':');
        let (kind, wf, st, at) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let at = match at {
            "before" => Boundary::Before,
            "after" => Boundary::After,
            _ => return None,
        };
        (kind == "crash").then(|| (wf.to_owned(), st.to_owned(), at))
    });
    if let Some((wf, st, at)) = plan
        && wf == workflow
        && st == step
        && *at == boundary
    {
        eprintln!("KEYWARD_FAULT: crashing {boundary:?} step {step} of workflow {workflow}");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn crash_point(_workflow: &str, _step: &str, _boundary: Boundary) {}
