//! This process's CPU time and peak memory, from /proc (Linux): what the
//! benchmarks report "per core", and what memory-bound tests assert.

use std::time::Instant;

fn stat_fields(pid: &str) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    after.split_whitespace().map(str::to_owned).collect()
}

/// User + system CPU seconds of this process so far (all threads).
pub fn cpu_seconds() -> f64 {
    cpu_seconds_of("self")
}

/// User + system CPU seconds of process `pid` so far (all threads).
pub fn cpu_seconds_of(pid: &str) -> f64 {
    let f = stat_fields(pid);
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// User + system CPU seconds of this process's live threads whose name
/// starts with `prefix` (e.g. `rdk:mock`, librdkafka's mock broker, which
/// a benchmark runs in its own process but does not bill to the service).
pub fn threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .map(|t| {
            let tid = t.file_name().to_string_lossy().into_owned();
            cpu_seconds_of(&format!("self/task/{tid}"))
        })
        .sum()
}

/// Peak resident set size in bytes (VmHWM) of process `pid` ("self" for this one).
pub fn peak_rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One benchmark measurement.
#[derive(Debug, Clone)]
pub struct Measure {
    /// What was measured.
    pub name: String,
    /// Events (records, rows) processed.
    pub events: u64,
    /// Wall seconds.
    pub wall: f64,
    /// CPU seconds of this process.
    pub cpu: f64,
}

impl Measure {
    /// Events per CPU-second ("per core").
    pub fn per_cpu(&self) -> f64 {
        self.events as f64 / self.cpu.max(1e-9)
    }

    /// Events per wall second.
    pub fn per_wall(&self) -> f64 {
        self.events as f64 / self.wall.max(1e-9)
    }
}

/// Runs `f` and measures it.
pub fn measure(name: &str, events: u64, f: impl FnOnce()) -> Measure {
    eprintln!("bench: {name} ...");
    let (w, c) = (Instant::now(), cpu_seconds());
    f();
    Measure {
        name: name.into(),
        events,
        wall: w.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - c,
    }
}

/// The results as a Markdown table.
pub fn table(results: &[Measure]) -> String {
    let mut s = String::from(
        "| what | per second (wall) | per CPU-second | wall s | CPU s |\n|---|---:|---:|---:|---:|\n",
    );
    for m in results {
        s.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
            m.name,
            m.per_wall(),
            m.per_cpu(),
            m.wall,
            m.cpu
        ));
    }
    s
}

/// Median, min and max of repeated measurements: what every benchmark
/// quotes, since one run on a shared machine moves by up to 40 %.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The middle value (the upper middle for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; all zero when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return Spread {
                median: 0.0,
                min: 0.0,
                max: 0.0,
            };
        }
        v.sort_by(f64::total_cmp);
        Spread {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }

    /// `median | min | max` table cells with `decimals` places.
    pub fn cells(&self, decimals: usize) -> String {
        format!(
            "{:.d$} | {:.d$} | {:.d$}",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// Measures repeated over runs (`runs[r][i]` is measure `i` of run `r`)
/// as a Markdown table: per CPU-second and per wall second, median, min
/// and max; and, where `floor[i]` names another row, the ratio of row
/// `i`'s per-CPU rate to that row's, taken within each run.
pub fn spread_table(runs: &[Vec<Measure>], floor: &[Option<usize>]) -> String {
    let mut s = String::from(
        "| what | per CPU-second median | min | max | per second (wall) median | × floor median | min | max |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let Some(first) = runs.first() else {
        return s;
    };
    for (i, m) in first.iter().enumerate() {
        let cpu = Spread::of(runs.iter().map(|r| r[i].per_cpu()));
        let wall = Spread::of(runs.iter().map(|r| r[i].per_wall()));
        let x = match floor.get(i).copied().flatten() {
            Some(f) => Spread::of(runs.iter().map(|r| r[i].per_cpu() / r[f].per_cpu())).cells(2),
            None => "| |".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {:.0} | {x} |\n",
            m.name,
            cpu.cells(0),
            wall.median
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn a_spread_takes_the_middle_of_the_sorted_values() {
        let s = Spread::of([5.0, 1.0, 9.0, 3.0, 7.0]);
        assert_eq!((s.median, s.min, s.max), (5.0, 1.0, 9.0));
        assert_eq!(Spread::of([2.0, 1.0]).median, 2.0);
        assert_eq!(Spread::of([]).max, 0.0);
        assert_eq!(Spread::of([1.5, 3.25]).cells(2), "3.25 | 1.50 | 3.25");
    }

    #[test]
    fn a_spread_table_takes_each_ratio_within_its_run() {
        let m = |name: &str, cpu: f64| super::Measure {
            name: name.into(),
            events: 100,
            wall: 1.0,
            cpu,
        };
        // Run 2 is twice as slow for both rows: the ratio stays 0.5.
        let runs = vec![
            vec![m("floor", 1.0), m("work", 2.0)],
            vec![m("floor", 2.0), m("work", 4.0)],
            vec![m("floor", 1.0), m("work", 2.0)],
        ];
        let t = super::spread_table(&runs, &[None, Some(0)]);
        let work = t.lines().find(|l| l.starts_with("| work")).unwrap();
        assert_eq!(work, "| work | 50 | 25 | 50 | 100 | 0.50 | 0.50 | 0.50 |");
        let floor = t.lines().find(|l| l.starts_with("| floor")).unwrap();
        assert_eq!(floor, "| floor | 100 | 50 | 100 | 100 | | | |");
    }
}
