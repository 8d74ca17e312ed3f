//! A boundary that turns a panic inside burn (device out of memory, a kernel failure) into a
//! `RuntimeError::Backend`, so one failed step does not take the whole measurement run down.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use api::runtime::RuntimeError;

/// Runs `f`, reporting a panic as a backend error about `what`.
///
/// Callers must treat state `f` touched as suspect after an error (the generation marks itself
/// failed), which is why unwind safety can be asserted here.
pub(crate) fn catch_backend_panic<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, RuntimeError>,
) -> Result<T, RuntimeError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(RuntimeError::Backend(format!(
            "{what} failed: {}",
            panic_message(payload.as_ref())
        )))
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
        let r: Result<(), _> = catch_backend_panic("step", || panic!("out of memory"));
        match r {
            Err(RuntimeError::Backend(m)) => {
                assert!(m.contains("step") && m.contains("out of memory"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(catch_backend_panic("x", || Ok(3)).unwrap(), 3);
    }
}
