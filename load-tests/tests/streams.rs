//! The benchmark's streams are what BENCHMARKS.md says they are: the plain limit-order stream
//! trades identically in our engine, in matchcore and in the reference model, and the mix keeps
//! its book near 1,000 orders without a single refusal. Short runs; no timing is asserted.

use load_tests::matchcore_side::MatchcoreRunner;
use load_tests::mix::{MixGenerator, PER_SIDE_TARGET};
use load_tests::ours_stream::{self, OursStreamBuilder};
use load_tests::stream::StreamGenerator;
use matching_engine::{Engine, Event};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 7;

#[test]
fn stream_trades_identically_in_offpeak_matchcore_and_the_model() {
    let mut generator = StreamGenerator::new(ChaCha8Rng::seed_from_u64(SEED));
    let mut theirs = MatchcoreRunner::default();
    let mut builder = OursStreamBuilder::default();
    let mut ours = Engine::new();
    let mut out: Vec<Event> = Vec::new();
    ours_stream::replay(&mut ours, &builder.setup(), &mut out);
    for _ in 0..4 {
        let ops: Vec<_> = (0..5_000).map(|_| generator.next_op()).collect();
        let commands = theirs.build(&ops);
        theirs.run(&commands);
        ours_stream::replay(&mut ours, &builder.build(&ops), &mut out);
    }
    assert!(generator.model.trades > 1_000, "the stream must trade");
    let model = generator.model.levels();
    assert_eq!(
        ours_stream::levels(&ours),
        model,
        "offpeak vs model (seed {SEED})"
    );
    assert_eq!(theirs.levels(), model, "matchcore vs model (seed {SEED})");
    assert_eq!(builder.rejected, 0, "offpeak refused part of the stream");
    assert_eq!(theirs.rejected, 0, "matchcore refused part of the stream");
    assert_eq!(ours.state_hash(), builder.engine().state_hash());
}

#[test]
fn mix_keeps_about_1000_orders_and_is_never_refused() {
    let mut generator = MixGenerator::new(ChaCha8Rng::seed_from_u64(SEED));
    let mut replayed = Engine::new();
    let mut out: Vec<Event> = Vec::new();
    ours_stream::replay(&mut replayed, &generator.setup(), &mut out);
    let before = generator.counts;
    for _ in 0..4 {
        ours_stream::replay(&mut replayed, &generator.chunk(10_000), &mut out);
    }
    let (bids, blocks) = generator.resting();
    let target = PER_SIDE_TARGET as f64;
    for side in [bids, blocks] {
        assert!(
            (side as f64 - target).abs() < 0.2 * target,
            "a side drifted to {side} orders (seed {SEED})"
        );
    }
    let counts = generator.counts;
    assert_eq!(counts.rejected, 0, "the mix was refused (seed {SEED})");
    assert!(counts.trades > 0, "IOC bids must trade");
    let amended = counts.bid_amends + counts.block_updates;
    let amends = amended as f64 / (counts.total() - before.total()) as f64;
    assert!((0.80..0.84).contains(&amends), "amends were {amends}");
    assert_eq!(replayed.state_hash(), generator.engine().state_hash());
}
