//! The upper bound on value served that efficiency is measured against: the best any
//! mechanism could do with perfect foresight, fractional jobs and free preemption.
//!
//! Per pool, time is cut into one-hour slots. Slot `s` can carry `C_s` GPU-milliseconds: every
//! block's GPUs from its release to its window end or its reclaim plus the pool's notice
//! (the longest any GPU of it can be leased), whether or not a mechanism sells them. Job `j`,
//! worth `v_j` per GPU-hour, may take in slot `s` at most its GPUs times the part of the slot
//! inside its window `[arrival, deadline]`, and in all at most its GPUs times its duration.
//! The fractional bound is the largest `sum v_j x_j` over such assignments `x_js`: a linear
//! program (contiguity, all-or-none and integrality dropped). The window-aware bound (the one
//! efficiency is measured against) adds one constraint the engine enforces on every lease: a
//! rigid job's work sits only on blocks whose window is at least its duration; `C_s` is split
//! by window class, and a job may use its own class and every longer one.
//!
//! Both are solved exactly as a max-weight flow source -> job -> slot (-> longer window
//! classes) -> sink. Because the weights sit on the source arcs alone, taking the jobs from
//! the most valuable down and pushing as much of each as augmenting paths allow (earlier jobs
//! may be rerouted, never reduced) is optimal: the flows form a polymatroid, on which the
//! greedy algorithm is exact.
//!
//! Any mechanism's value served fits these constraints: its useful lease time lies inside the
//! job's window, on offered GPUs of blocks open long enough for the lease, at most the job's
//! GPUs at once and its work in all. So no mechanism can exceed either bound (checked by the
//! tests); the window-aware one is never above the fractional one.

use super::curves::HOUR_MS;
use super::demand::Job;
use super::supply::SupplyPlan;
use matching_engine::TimeMs;

/// Slot length of the bound: an hour keeps the flow network small (a week of four pools
/// solves in well under a second) while the per-slot caps still follow each job's window.
pub const BOUND_SLOT_MS: i64 = HOUR_MS;

/// One arc of the flow network (its reverse is the arc at `index ^ 1`).
struct Arc {
    to: usize,
    residual: i64,
}

/// A flow network in GPU-milliseconds.
struct Network {
    arcs: Vec<Arc>,
    out: Vec<Vec<usize>>,
    /// `seen[node] == stamp`: visited by the current search (no clearing between searches).
    seen: Vec<u32>,
    stamp: u32,
    /// Nodes that cannot reach the sink, and never will again: a failed search marks what it
    /// visited. Augmenting only changes arcs on paths of nodes that do reach the sink, and a
    /// new job only adds arcs out of itself, so nothing ever leads out of a dead set again.
    dead: Vec<bool>,
}

impl Network {
    fn new(nodes: usize) -> Network {
        Network {
            arcs: Vec::new(),
            out: vec![Vec::new(); nodes],
            seen: vec![0; nodes],
            stamp: 0,
            dead: vec![false; nodes],
        }
    }

    /// Adds an arc; a node's arcs are searched in the order they were added.
    fn add(&mut self, from: usize, to: usize, capacity: i64) -> usize {
        let index = self.arcs.len();
        self.arcs.push(Arc {
            to,
            residual: capacity,
        });
        self.arcs.push(Arc {
            to: from,
            residual: 0,
        });
        self.out[from].push(index);
        self.out[to].push(index + 1);
        index
    }

    /// Pushes up to `wanted` from `from` to `sink` along shortest augmenting paths (breadth
    /// first); returns how much.
    fn push_from(&mut self, from: usize, sink: usize, wanted: i64) -> i64 {
        let mut pushed = 0;
        let mut came_by = vec![0usize; 0];
        let mut queue: Vec<usize> = Vec::new();
        while pushed < wanted {
            self.stamp += 1;
            if came_by.len() != self.out.len() {
                came_by = vec![0; self.out.len()];
            }
            queue.clear();
            queue.push(from);
            self.seen[from] = self.stamp;
            let mut head = 0;
            let mut found = false;
            'search: while let Some(&node) = queue.get(head) {
                head += 1;
                for &arc in &self.out[node] {
                    let Arc { to, residual } = self.arcs[arc];
                    if residual > 0 && self.seen[to] != self.stamp && !self.dead[to] {
                        self.seen[to] = self.stamp;
                        came_by[to] = arc;
                        if to == sink {
                            found = true;
                            break 'search;
                        }
                        queue.push(to);
                    }
                }
            }
            if !found {
                for &node in &queue {
                    self.dead[node] = true;
                }
                break;
            }
            let mut bottleneck = wanted - pushed;
            let mut node = sink;
            while node != from {
                let arc = came_by[node];
                bottleneck = bottleneck.min(self.arcs[arc].residual);
                node = self.arcs[arc ^ 1].to;
            }
            let mut node = sink;
            while node != from {
                let arc = came_by[node];
                self.arcs[arc].residual -= bottleneck;
                self.arcs[arc ^ 1].residual += bottleneck;
                node = self.arcs[arc ^ 1].to;
            }
            pushed += bottleneck;
        }
        pushed
    }

    /// Pushes up to `wanted` along the path of `arcs` (each arc's head is the next's tail);
    /// returns how much.
    fn push_along(&mut self, arcs: &[usize], wanted: i64) -> i64 {
        let amount = arcs
            .iter()
            .map(|&arc| self.arcs[arc].residual)
            .fold(wanted, i64::min)
            .max(0);
        for &arc in arcs {
            self.arcs[arc].residual -= amount;
            self.arcs[arc ^ 1].residual += amount;
        }
        amount
    }
}

/// Window classes of the window-aware bound, by a block's window length in hours: class `k`
/// holds windows from `WINDOW_CLASSES_H[k]` up to the next bound. Finer classes tighten the
/// bound; these keep its network a few thousand nodes per pool and week.
const WINDOW_CLASSES_H: [f64; 20] = [
    0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 30.0,
    36.0, 48.0, 72.0,
];

/// Which bound: the plain fractional relaxation, or one that also keeps a rigid job off
/// windows shorter than its duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundKind {
    /// Every job may use every offered GPU in its window.
    Fractional,
    /// As `Fractional`, except that a rigid job's work can only sit on blocks whose window
    /// (from release to `available_until`) is at least its duration: the engine matches a
    /// bid only with blocks open for its whole duration, so no mechanism can do better.
    WindowAware,
}

/// The next longer class's node after slot-class node `node`, `usize::MAX` after the last.
fn node_after(node: usize, classes: usize) -> usize {
    if (node + 1).is_multiple_of(classes) {
        usize::MAX
    } else {
        node + 1
    }
}

/// The class of a window (or a shortest lease) of `ms` milliseconds.
fn window_class(ms: i64) -> usize {
    let hours = ms as f64 / HOUR_MS as f64;
    WINDOW_CLASSES_H
        .iter()
        .rposition(|&from| hours >= from)
        .unwrap_or(0)
}

/// The bound on value served in pool `pool` over `[start, horizon)`, in micro-dollars.
pub fn value_bound_micros(
    supply: &SupplyPlan,
    jobs: &[Job],
    pool: usize,
    shape: &BoundShape,
) -> u64 {
    bound_assignment(supply, jobs, pool, shape).0
}

/// What a bound is computed over.
#[derive(Clone, Copy, Debug)]
pub struct BoundShape {
    /// Which bound.
    pub kind: BoundKind,
    /// The pools' notice (a reclaimed block's GPUs stay leased this long).
    pub notice_s: u32,
    /// From.
    pub start: TimeMs,
    /// To.
    pub horizon: TimeMs,
}

/// The bound and, per job (by index into `jobs`), the GPU-milliseconds it gets in it.
pub fn bound_assignment(
    supply: &SupplyPlan,
    jobs: &[Job],
    pool: usize,
    shape: &BoundShape,
) -> (u64, Vec<i64>) {
    let BoundShape {
        kind,
        notice_s,
        start,
        horizon,
    } = *shape;
    let classes = match kind {
        BoundKind::Fractional => 1,
        BoundKind::WindowAware => WINDOW_CLASSES_H.len(),
    };
    let slots = ((horizon.0 - start.0 + BOUND_SLOT_MS - 1) / BOUND_SLOT_MS).max(0) as usize;
    let slot_start = |s: usize| start.0 + s as i64 * BOUND_SLOT_MS;
    let slot_end = |s: usize| (slot_start(s) + BOUND_SLOT_MS).min(horizon.0);
    let overlap =
        |s: usize, from: i64, to: i64| (to.min(slot_end(s)) - from.max(slot_start(s))).max(0);
    let class_of = |ms: i64| if classes == 1 { 0 } else { window_class(ms) };
    // Node `s * classes + k`: slot `s`, windows of class `k` (and, through the chain, longer).
    let node = |s: usize, k: usize| s * classes + k;

    let mut capacity = vec![0i64; slots * classes];
    for block in supply.blocks.iter().filter(|b| b.pool == pool) {
        let end = block.reclaimed_at.map_or(block.until, |at| {
            at.plus_s(notice_s as u64).min(block.until)
        });
        let (from, to) = (block.released_at.0.max(start.0), end.0.min(horizon.0));
        if from >= to {
            continue;
        }
        let k = class_of(block.until.0 - block.released_at.0);
        let first = ((from - start.0) / BOUND_SLOT_MS) as usize;
        let last = (((to - start.0 - 1) / BOUND_SLOT_MS) as usize).min(slots - 1);
        for s in first..=last {
            capacity[node(s, k)] += overlap(s, from, to) * block.gpus as i64;
        }
    }

    let mut candidates: Vec<(usize, &Job)> = jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| j.pool == pool && j.deadline.0 > start.0 && j.arrives_at.0 < horizon.0)
        .collect();
    // Most valuable first; ties in arrival order (the sort is stable).
    candidates.sort_by_key(|(_, j)| std::cmp::Reverse(j.value_micros));
    let mut assigned = vec![0i64; jobs.len()];
    let slot_nodes = slots * classes;
    let sink = slot_nodes + candidates.len();
    let mut network = Network::new(sink + 1);
    // Per slot-class node: its arc to the sink and its arc to the next longer class.
    let mut sink_arc = vec![0usize; slot_nodes];
    let mut chain_arc = vec![usize::MAX; slot_nodes];
    for s in 0..slots {
        for k in 0..classes {
            sink_arc[node(s, k)] = network.add(node(s, k), sink, capacity[node(s, k)]);
            if k + 1 < classes {
                chain_arc[node(s, k)] = network.add(node(s, k), node(s, k + 1), i64::MAX / 4);
            }
        }
    }
    let mut path: Vec<usize> = Vec::new();
    let mut total: u128 = 0;
    for (index, &(job_index, job)) in candidates.iter().enumerate() {
        let job_node = slot_nodes + index;
        let (from, to) = (job.arrives_at.0.max(start.0), job.deadline.0.min(horizon.0));
        if from >= to {
            continue;
        }
        // A checkpointing job may take leases down to a minute near its deadline: any window.
        let k = if job.tolerant {
            0
        } else {
            class_of(job.duration_s as i64 * 1000)
        };
        let first = ((from - start.0) / BOUND_SLOT_MS) as usize;
        let last = (((to - start.0 - 1) / BOUND_SLOT_MS) as usize).min(slots - 1);
        let wanted = job.work_gpu_ms();
        let mut served = 0;
        for s in first..=last {
            let cap = overlap(s, from, to) * job.gpus as i64;
            if cap <= 0 {
                continue;
            }
            let arc = network.add(job_node, node(s, k), cap);
            // Straight to free capacity first, in this slot's class or a longer one; the
            // search below then reroutes earlier jobs only where it must.
            let mut at = node(s, k);
            path.clear();
            path.push(arc);
            while served < wanted && at != usize::MAX {
                path.push(sink_arc[at]);
                served += network.push_along(&path, wanted - served);
                path.pop();
                if chain_arc[at] == usize::MAX {
                    break;
                }
                path.push(chain_arc[at]);
                at = node_after(at, classes);
            }
        }
        served += network.push_from(job_node, sink, wanted - served);
        assigned[job_index] = served;
        total += job.value_micros as u128 * served as u128;
    }
    ((total / HOUR_MS as u128) as u64, assigned)
}
