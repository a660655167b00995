//! engine-bench: the engine's throughput, latency, speed against matchcore 0.4.0, and memory
//! per resting bid (issue 2, part 4). Run with
//! `cargo run -p load-tests --release --bin engine-bench [-- --seed N --mix-ops N ...]`.
//!
//! The last line is machine-readable:
//! `engine-bench: ops_per_s=<int> p99_ns=<int> vs_matchcore=<ratio> bytes_per_order=<int>`.

use load_tests::matchcore_side::MatchcoreRunner;
use load_tests::measure::{self, latency_histogram, percentiles, rate};
use load_tests::mix::{self, MixGenerator};
use load_tests::ours_stream::{self, OursStreamBuilder};
use load_tests::stream::StreamGenerator;
use load_tests::{memory, setup};
use matching_engine::{Command, Engine, Event, TimeInForce};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

/// Commands generated, then replayed, at a time: bounds the memory the pre-built commands take.
const CHUNK_OPS: usize = 50_000;

struct Options {
    seed: u64,
    mix_warmup_ops: usize,
    mix_ops: usize,
    stream_warmup_ops: usize,
    stream_ops: usize,
    resting_bids: u64,
    /// Run only this part (`memory`, `mix` or `stream`), e.g. under a profiler.
    only: Option<String>,
}

impl Options {
    fn parse() -> Options {
        let mut options = Options {
            seed: 20_260_101,
            mix_warmup_ops: 500_000,
            mix_ops: 2_000_000,
            stream_warmup_ops: 100_000,
            stream_ops: 1_000_000,
            resting_bids: 1_000_000,
            only: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--only" {
                let part = args.next().unwrap_or_default();
                if !["memory", "mix", "stream"].contains(&part.as_str()) {
                    usage("--only takes memory, mix or stream");
                }
                options.only = Some(part);
                continue;
            }
            let value = args
                .next()
                .and_then(|v| v.replace('_', "").parse::<u64>().ok());
            let Some(value) = value else {
                usage(&format!("{flag} needs a whole number"));
            };
            match flag.as_str() {
                "--seed" => options.seed = value,
                "--mix-warmup-ops" => options.mix_warmup_ops = value as usize,
                "--mix-ops" => options.mix_ops = value as usize,
                "--stream-warmup-ops" => options.stream_warmup_ops = value as usize,
                "--stream-ops" => options.stream_ops = value as usize,
                "--resting-bids" => options.resting_bids = value,
                _ => usage(&format!("unknown option {flag}")),
            }
        }
        options
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("engine-bench: {problem}");
    eprintln!(
        "usage: engine-bench [--seed N] [--mix-warmup-ops N] [--mix-ops N] \
         [--stream-warmup-ops N] [--stream-ops N] [--resting-bids N] \
         [--only memory|mix|stream]"
    );
    std::process::exit(2);
}

fn main() {
    let options = Options::parse();
    let started = Instant::now();
    println!(
        "engine-bench: seed={} mix_ops={} (+{} warm-up) stream_ops={} (+{} warm-up) resting_bids={}",
        options.seed,
        options.mix_ops,
        options.mix_warmup_ops,
        options.stream_ops,
        options.stream_warmup_ops,
        options.resting_bids
    );

    println!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        measure::load_average()
    );
    let runs = |part: &str| options.only.as_deref().is_none_or(|only| only == part);
    // Memory first, in a fresh process: memory freed by the other runs would otherwise be
    // reused by the engine without growing the resident set.
    let bytes_per_order = if runs("memory") {
        memory_run(&options)
    } else {
        0
    };
    let (ops_per_s, p99_ns) = if runs("mix") {
        timer_run();
        mix_run(&options)
    } else {
        (0, 0)
    };
    let vs_matchcore = if runs("stream") {
        stream_run(&options)
    } else {
        0.0
    };

    println!(
        "total run time: {:.1} s; load average now {}",
        started.elapsed().as_secs_f64(),
        measure::load_average()
    );
    println!(
        "engine-bench: ops_per_s={ops_per_s} p99_ns={p99_ns} vs_matchcore={vs_matchcore:.2} \
         bytes_per_order={bytes_per_order}"
    );
}

fn memory_run(options: &Options) -> u64 {
    println!("\n== memory: {} resting bids ==", options.resting_bids);
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0x3);
    let started = Instant::now();
    let (report, engine) = memory::measure(&mut rng, options.resting_bids);
    let elapsed = started.elapsed();
    println!(
        "resting {} of {} bids over {} price levels; placed at {} bids/s",
        report.resting,
        report.bids,
        memory::PRICE_LEVELS,
        rate(report.bids, elapsed)
    );
    println!(
        "VmRSS before {:.1} MiB, after {:.1} MiB: {} bytes per resting bid",
        report.rss_before as f64 / 1048576.0,
        report.rss_after as f64 / 1048576.0,
        report.bytes_per_order()
    );
    drop(engine);
    report.bytes_per_order()
}

fn timer_run() {
    println!("\n== timer ==");
    let overhead = measure::timer_overhead(1_000_000);
    println!(
        "Instant::now() + elapsed() around nothing: {}",
        percentiles(&overhead)
    );
    println!("(every per-command latency below includes this overhead)");
}

fn mix_run(options: &Options) -> (u64, u64) {
    println!("\n== exchange-core style mix, one pool ==");
    let mut generator = MixGenerator::new(ChaCha8Rng::seed_from_u64(options.seed ^ 0x1));
    // `timed` is timed command by command; `bulk` replays the same commands with one clock
    // read per chunk, for throughput without the timer in the way.
    let mut timed = Engine::new();
    let mut bulk = Engine::new();
    let mut out: Vec<Event> = Vec::with_capacity(64);
    let setup = generator.setup();
    ours_stream::replay(&mut timed, &setup, &mut out);
    ours_stream::replay(&mut bulk, &setup, &mut out);

    let mut remaining = options.mix_warmup_ops;
    while remaining > 0 {
        let chunk = generator.chunk(remaining.min(CHUNK_OPS));
        remaining -= chunk.len();
        ours_stream::replay(&mut timed, &chunk, &mut out);
        ours_stream::replay(&mut bulk, &chunk, &mut out);
    }

    let (bids, blocks) = generator.resting();
    println!("book after the warm-up: {bids} bids and {blocks} blocks resting");
    let before = generator.counts;
    let mut histogram = latency_histogram();
    let mut by_kind: Vec<_> = COMMAND_KINDS.iter().map(|_| latency_histogram()).collect();
    let mut timed_total = Duration::ZERO;
    let mut bulk_total = Duration::ZERO;
    let mut remaining = options.mix_ops;
    while remaining > 0 {
        let chunk = generator.chunk(remaining.min(CHUNK_OPS));
        remaining -= chunk.len();
        for (at, command) in &chunk {
            let started = Instant::now();
            timed.apply(*at, command, &mut out);
            out.clear();
            let elapsed = started.elapsed();
            timed_total += elapsed;
            measure::record(&mut histogram, elapsed);
            measure::record(&mut by_kind[command_kind(command)], elapsed);
        }
        bulk_total += ours_stream::replay(&mut bulk, &chunk, &mut out);
    }

    let counts = generator.counts;
    let measured = counts.total() - before.total();
    let share = |now: u64, then: u64| 100.0 * (now - then) as f64 / measured.max(1) as f64;
    println!(
        "measured commands: {measured}: GTC {:.1}% (bids {:.1}%, blocks {:.1}%), IOC bids {:.1}%, \
         cancels {:.1}% (bids {:.1}%, block reclaims {:.1}%), amends {:.1}% (bids {:.1}%, block \
         reprices {:.1}%)",
        share(
            counts.gtc_bids + counts.blocks_released,
            before.gtc_bids + before.blocks_released
        ),
        share(counts.gtc_bids, before.gtc_bids),
        share(counts.blocks_released, before.blocks_released),
        share(counts.ioc_bids, before.ioc_bids),
        share(
            counts.bid_cancels + counts.block_reclaims,
            before.bid_cancels + before.block_reclaims
        ),
        share(counts.bid_cancels, before.bid_cancels),
        share(counts.block_reclaims, before.block_reclaims),
        share(
            counts.bid_amends + counts.block_updates,
            before.bid_amends + before.block_updates
        ),
        share(counts.bid_amends, before.bid_amends),
        share(counts.block_updates, before.block_updates),
    );
    let (bids, blocks) = generator.resting();
    let depth = timed
        .depth(setup::POOL, usize::MAX)
        .expect("the benchmark pool exists");
    println!(
        "book at the end: {} bids and {} blocks resting on {} levels ({} bid, {} ask); \
         trades {}, rejections {}",
        bids,
        blocks,
        depth.bids.len() + depth.asks.len(),
        depth.bids.len(),
        depth.asks.len(),
        counts.trades - before.trades,
        counts.rejected,
    );
    println!(
        "engine state at the end: {} (of {} blocks released)",
        setup::holdings(&timed, mix::BUYERS, mix::SUPPLIERS),
        counts.blocks_released
    );
    let same = timed.state_hash() == bulk.state_hash()
        && bulk.state_hash() == generator.engine().state_hash();
    println!(
        "replays reach the generator's state: {}",
        if same { "yes" } else { "NO" }
    );

    let ops_per_s = rate(measured, bulk_total);
    println!(
        "throughput (untimed pass): {ops_per_s} commands/s ({:.0} ns/command)",
        bulk_total.as_nanos() as f64 / measured.max(1) as f64
    );
    println!(
        "throughput (timed pass, timer included): {} commands/s",
        rate(measured, timed_total)
    );
    println!("latency per command: {}", percentiles(&histogram));
    for (kind, histogram) in COMMAND_KINDS.iter().zip(&by_kind) {
        println!("  {kind:<16} {}", percentiles(histogram));
    }
    (ops_per_s, histogram.value_at_quantile(0.99))
}

/// The kinds of command the mix sends, for per-kind latencies.
const COMMAND_KINDS: [&str; 7] = [
    "place GTC bid",
    "place IOC bid",
    "amend bid",
    "cancel bid",
    "release block",
    "update block",
    "reclaim block",
];

fn command_kind(command: &Command) -> usize {
    match command {
        Command::PlaceBid(bid) if bid.tif == TimeInForce::Ioc => 1,
        Command::PlaceBid(_) => 0,
        Command::AmendBid(_) => 2,
        Command::CancelBid { .. } => 3,
        Command::ReleaseCapacity(_) => 4,
        Command::UpdateCapacity(_) => 5,
        _ => 6,
    }
}

fn stream_run(options: &Options) -> f64 {
    println!("\n== plain limit-order stream: offpeak engine vs matchcore 0.4.0 ==");
    let mut generator = StreamGenerator::new(ChaCha8Rng::seed_from_u64(options.seed ^ 0x2));
    let mut theirs = MatchcoreRunner::default();
    let mut builder = OursStreamBuilder::default();
    let mut ours = Engine::new();
    let mut out: Vec<Event> = Vec::with_capacity(64);
    ours_stream::replay(&mut ours, &builder.setup(), &mut out);

    let mut ours_total = Duration::ZERO;
    let mut theirs_total = Duration::ZERO;
    let mut measured = 0u64;
    let mut remaining_warmup = options.stream_warmup_ops;
    let mut remaining = options.stream_ops;
    let mut chunk_index = 0;
    while remaining_warmup + remaining > 0 {
        let warm = remaining_warmup > 0;
        let n = match warm {
            true => remaining_warmup.min(CHUNK_OPS),
            false => remaining.min(CHUNK_OPS),
        };
        let ops: Vec<_> = (0..n).map(|_| generator.next_op()).collect();
        let theirs_commands = theirs.build(&ops);
        let ours_commands = builder.build(&ops);
        // Alternate who goes first, so neither always runs on a cache the other warmed.
        let (ours_took, theirs_took) = if chunk_index % 2 == 0 {
            let o = ours_stream::replay(&mut ours, &ours_commands, &mut out);
            (o, theirs.run(&theirs_commands))
        } else {
            let t = theirs.run(&theirs_commands);
            (ours_stream::replay(&mut ours, &ours_commands, &mut out), t)
        };
        chunk_index += 1;
        if warm {
            remaining_warmup -= n;
        } else {
            remaining -= n;
            measured += n as u64;
            ours_total += ours_took;
            theirs_total += theirs_took;
        }
    }

    println!(
        "stream: {} places ({} crossing), {} cancels, {} executions; {} orders resting at the end",
        generator.places,
        generator.crossing_places,
        generator.cancels,
        generator.model.trades,
        generator.model.len()
    );
    println!(
        "offpeak engine state at the end: {}",
        setup::holdings(&ours, ours_stream::BUYERS, ours_stream::SUPPLIERS)
    );
    let model = generator.model.levels();
    let agree_ours = ours_stream::levels(&ours) == model;
    let agree_theirs = theirs.levels() == model;
    println!(
        "final books equal the reference model: offpeak {}, matchcore {}; rejections: offpeak {}, matchcore {}",
        if agree_ours { "yes" } else { "NO" },
        if agree_theirs { "yes" } else { "NO" },
        builder.rejected,
        theirs.rejected
    );
    println!(
        "same engine state after replay: {}",
        if ours.state_hash() == builder.engine().state_hash() {
            "yes"
        } else {
            "NO"
        }
    );
    let ours_rate = rate(measured, ours_total);
    let theirs_rate = rate(measured, theirs_total);
    let ratio = ours_rate as f64 / theirs_rate.max(1) as f64;
    println!(
        "offpeak:   {ours_rate} ops/s ({:.0} ns/op)",
        ours_total.as_nanos() as f64 / measured.max(1) as f64
    );
    println!(
        "matchcore: {theirs_rate} ops/s ({:.0} ns/op)",
        theirs_total.as_nanos() as f64 / measured.max(1) as f64
    );
    println!("ratio offpeak/matchcore: {ratio:.2}");
    ratio
}
