//! Where a study's runs execute relative to each other: one at a time (the default), or, with
//! `study(#{ placement: "per-device" })`, in lanes that run at the same time, one lane per
//! group of devices that share no hardware with another lane's.
//!
//! Concurrent runs share the machine: CPU package and DRAM energy are machine-wide, so a run
//! running beside others holds a time-share of them ([`InFlight`]), labelled `shared`. A run's
//! GPU energy stays its own GPUs' counters.

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use api::device::{DeviceName, replica_devices};

/// How a study's runs are placed in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// One run at a time, in schedule order; every run has the machine to itself.
    #[default]
    OneAtATime,
    /// Runs whose devices share no hardware run at the same time, one lane per group of
    /// overlapping devices.
    PerDevice,
}

impl Placement {
    /// Every placement's name, as scripts spell it.
    pub const NAMES: [&'static str; 2] = ["one-at-a-time", "per-device"];

    /// Name used in scripts, plans and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Placement::OneAtATime => "one-at-a-time",
            Placement::PerDevice => "per-device",
        }
    }

    /// The placement a script names, if any.
    pub fn parse(name: &str) -> Option<Placement> {
        match name {
            "one-at-a-time" => Some(Placement::OneAtATime),
            "per-device" => Some(Placement::PerDevice),
            _ => None,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Groups runs' device strings (`cuda:0`, `cpu:0-3`, replicas `cuda:0+cuda:1`) into lanes:
/// devices that share hardware, directly or through another device, are one lane, so no two
/// lanes ever use the same GPU or core. Lanes come in the order their first device appears,
/// each lane's devices likewise, each device once.
///
/// A device that does not parse (the plan checks them, so only a hand-built plan has one)
/// joins every lane: at worst the study runs one at a time.
pub fn lanes<'d>(devices: impl IntoIterator<Item = &'d str>) -> Vec<Vec<String>> {
    let mut distinct: Vec<&str> = Vec::new();
    for device in devices {
        if !distinct.contains(&device) {
            distinct.push(device);
        }
    }
    let parsed: Vec<Option<Vec<DeviceName>>> = distinct
        .iter()
        .map(|d| {
            replica_devices(d)
                .iter()
                .map(|r| DeviceName::parse(r).ok())
                .collect()
        })
        .collect();
    let overlap = |a: usize, b: usize| match (&parsed[a], &parsed[b]) {
        (Some(x), Some(y)) => x.iter().any(|p| y.iter().any(|q| p.overlaps(q))),
        _ => true,
    };
    // Union-find over the few distinct devices a study names.
    let mut parent: Vec<usize> = (0..distinct.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for a in 0..distinct.len() {
        for b in a + 1..distinct.len() {
            if overlap(a, b) {
                let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                // The earlier device stays the root, so lanes keep first-appearance order.
                parent[ra.max(rb)] = ra.min(rb);
            }
        }
    }
    let mut lanes: Vec<(usize, Vec<String>)> = Vec::new();
    for (i, device) in distinct.iter().enumerate() {
        let r = root(&mut parent, i);
        match lanes.iter_mut().find(|(root, _)| *root == r) {
            Some((_, members)) => members.push(device.to_string()),
            None => lanes.push((r, vec![device.to_string()])),
        }
    }
    lanes.into_iter().map(|(_, members)| members).collect()
}

/// Lanes written for a plan: devices of a lane joined by `, `, lanes by ` | `.
pub fn describe_lanes(lanes: &[Vec<String>]) -> String {
    lanes
        .iter()
        .map(|lane| lane.join(", "))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The timed windows of a study's runs executing concurrently, from which each run's share of
/// machine-wide energy is computed exactly.
///
/// When a run's window closes at `end`, every run that overlapped it has already opened its
/// window (it opened before `end`), so the concurrency integral ∫ active(t) dt over the window
/// is known: windows still open count as active until `end`. The run holds the window's
/// machine-wide energy divided by the mean number of runs in flight, that integral over the
/// window's length.
#[derive(Debug, Default)]
pub struct InFlight {
    windows: Mutex<Windows>,
}

#[derive(Debug, Default)]
struct Windows {
    next: u64,
    /// (ticket, start, end): open windows have no end yet.
    list: Vec<(u64, f64, Option<f64>)>,
}

/// One run's window in an [`InFlight`] registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Windows> {
        // The list stays consistent under every panic (each update is one push or one
        // assignment), so a poisoned lock's data is still sound.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run's window opens at `start_s` (seconds on the executor's clock).
    pub fn open(&self, start_s: f64) -> Ticket {
        let mut w = self.lock();
        let ticket = w.next;
        w.next += 1;
        w.list.push((ticket, start_s, None));
        Ticket(ticket)
    }

    /// Closes a window at `end_s` and returns the mean number of runs in flight over it
    /// (∫ active dt over the window, divided by its length): at least 1, since the run itself
    /// was in flight; 1 for an empty window.
    pub fn close(&self, ticket: Ticket, end_s: f64) -> f64 {
        let mut w = self.lock();
        let Some(start_s) =
            w.list
                .iter_mut()
                .find(|(t, _, _)| *t == ticket.0)
                .map(|(_, start, end)| {
                    *end = Some(end_s);
                    *start
                })
        else {
            return 1.0;
        };
        let length = end_s - start_s;
        let integral: f64 = w
            .list
            .iter()
            .map(|&(_, s, e)| (e.unwrap_or(end_s).min(end_s) - s.max(start_s)).max(0.0))
            .sum();
        // A closed window ending before every open window started (and before now) can
        // overlap no window that is still to close: forget it, so the list stays short.
        let horizon = w
            .list
            .iter()
            .filter(|(_, _, e)| e.is_none())
            .map(|&(_, s, _)| s)
            .fold(end_s, f64::min);
        w.list.retain(|&(_, _, e)| e.is_none_or(|e| e > horizon));
        if length > 0.0 {
            (integral / length).max(1.0)
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_that_share_hardware_are_one_lane() {
        assert_eq!(
            lanes(["cuda:0", "cuda:1", "cpu", "cuda:0", "cuda:1"]),
            vec![vec!["cuda:0"], vec!["cuda:1"], vec!["cpu"]]
        );
        // `cpu` overlaps every core set; disjoint core sets are lanes of their own.
        assert_eq!(
            lanes(["cpu:0-1", "cpu:2-3", "cpu"]),
            vec![vec!["cpu:0-1", "cpu:2-3", "cpu"]]
        );
        assert_eq!(
            lanes(["cpu:0-1", "cpu:2-3", "cpu:1,4"]),
            vec![vec!["cpu:0-1", "cpu:1,4"], vec!["cpu:2-3"]]
        );
        // A replicated run joins the lanes of each of its devices; `cuda` is `cuda:0`.
        assert_eq!(
            lanes(["cuda:0", "cuda:2", "cuda:1", "cuda:1+cuda:2", "cuda"]),
            vec![
                vec!["cuda:0", "cuda"],
                vec!["cuda:2", "cuda:1", "cuda:1+cuda:2"]
            ]
        );
        assert_eq!(lanes(["cuda:0", "bogus"]), vec![vec!["cuda:0", "bogus"]]);
        assert!(lanes([]).is_empty());
        assert_eq!(
            describe_lanes(&lanes(["cuda:0", "cpu:0-1", "cpu:1"])),
            "cuda:0 | cpu:0-1, cpu:1"
        );
    }

    #[test]
    fn the_mean_in_flight_is_the_concurrency_integral_over_the_window() {
        let f = InFlight::default();
        // a [0, 4], b [1, 3], c [2, 6]: closed in order of their ends.
        let a = f.open(0.0);
        let b = f.open(1.0);
        let c = f.open(2.0);
        // b: itself 2 s, a 2 s, c 1 s over a 2 s window.
        assert_eq!(f.close(b, 3.0), 2.5);
        // a: itself 4, b 2, c (open until 4) 2, over 4 s.
        assert_eq!(f.close(a, 4.0), 2.0);
        // c: itself 4, a 2, b 1, over 4 s.
        assert_eq!(f.close(c, 6.0), 1.75);
        // Alone, and an empty window.
        let d = f.open(10.0);
        assert_eq!(f.close(d, 12.0), 1.0);
        let e = f.open(13.0);
        assert_eq!(f.close(e, 13.0), 1.0);
        assert!(f.lock().list.is_empty());
    }

    #[test]
    fn names_round_trip() {
        for name in Placement::NAMES {
            assert_eq!(Placement::parse(name).map(Placement::name), Some(name));
        }
        assert_eq!(Placement::parse("per-gpu"), None);
        assert_eq!(Placement::default(), Placement::OneAtATime);
    }
}
