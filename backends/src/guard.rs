//! A boundary that turns a panic inside burn (device out of memory, a kernel failure) into a
//! [`BackendError::Panic`], so one failed step does not take the whole measurement run down.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::BackendError;

/// Runs `f`, reporting a panic as a backend error about `what`.
///
/// Callers must treat state `f` touched as suspect after an error (the generation marks itself
/// failed), which is why unwind safety can be asserted here.
pub(crate) fn catch_backend_panic<T, E: From<BackendError>>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(BackendError::Panic {
            during: what.to_string(),
            message: panic_message(payload.as_ref()).to_string(),
        }
        .into())
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "panic with a non-text payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_backend_errors() {
        let r: Result<(), BackendError> = catch_backend_panic("step", || panic!("out of memory"));
        match r {
            Err(e @ BackendError::Panic { .. }) => {
                assert_eq!(e.to_string(), "step failed: out of memory")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            catch_backend_panic("x", || Ok::<_, BackendError>(3)).unwrap(),
            3
        );
    }
}
