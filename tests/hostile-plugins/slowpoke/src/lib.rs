//! Hostile test plugin `slowpoke`: slow, but it finishes. On the source `"attack"` it works
//! for [`WORK`] of wall-clock time, then masks the whole input: well within a test's
//! deadline, far over the host's budget for a call made on an async thread.
hostile_guest::redactor! {
    bindgen: { world: "redactor", path: "../../../wit" },
    name: "hostile-slowpoke",
    attack: |data| {
        let until = std::time::Instant::now() + WORK;
        while std::time::Instant::now() < until {
            std::hint::spin_loop();
        }
        Ok(vec![Finding { rule: "all".into(), start: 0, end: data.len() as u64 }])
    },
}

/// How long an attack call works.
const WORK: std::time::Duration = std::time::Duration::from_millis(100);
