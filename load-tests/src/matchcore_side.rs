//! The stream through `matchcore` 0.4.0: its commands are built outside the timed section, then
//! executed back to back.

use crate::stream::{BookLevels, Op, Side};
use matchcore::{
    CancelCmd, Command, CommandKind, CommandMeta, CommandOutcome, LimitOrder, NewOrder, OrderBook,
    OrderFlags, OrderId, OrderKind, Price, Quantity, QuantityPolicy, SequenceNumber, SubmitCmd,
    TimeInForce, Timestamp,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One matchcore book and the bookkeeping that turns stream handles into its order ids.
pub struct MatchcoreRunner {
    book: OrderBook,
    /// The next command's sequence number (matchcore wants them consecutive from 0).
    sequence: u64,
    /// handle -> order id: matchcore names an order by its submit's sequence number.
    order_ids: Vec<u64>,
    /// Commands refused (the stream should have none).
    pub rejected: u64,
}

impl Default for MatchcoreRunner {
    fn default() -> Self {
        MatchcoreRunner {
            book: OrderBook::new("h100-sxm.us-east"),
            sequence: 0,
            order_ids: Vec::new(),
            rejected: 0,
        }
    }
}

impl MatchcoreRunner {
    /// Builds matchcore commands for a slice of the stream (not timed).
    pub fn build(&mut self, ops: &[Op]) -> Vec<Command> {
        ops.iter()
            .map(|op| {
                let meta = CommandMeta {
                    sequence_number: SequenceNumber(self.sequence),
                    timestamp: Timestamp(self.sequence),
                };
                let kind = match *op {
                    Op::Place {
                        handle,
                        side,
                        price_ticks,
                        quantity,
                    } => {
                        debug_assert_eq!(handle as usize, self.order_ids.len());
                        self.order_ids.push(self.sequence);
                        let side = match side {
                            Side::Buy => matchcore::Side::Buy,
                            Side::Sell => matchcore::Side::Sell,
                        };
                        CommandKind::Submit(SubmitCmd {
                            order: NewOrder::Limit(LimitOrder::new(
                                Price(price_ticks as u64),
                                QuantityPolicy::Standard {
                                    quantity: Quantity(quantity as u64),
                                },
                                OrderFlags::new(side, false, TimeInForce::Gtc),
                            )),
                        })
                    }
                    Op::Cancel { handle, .. } => CommandKind::Cancel(CancelCmd {
                        order_id: OrderId(self.order_ids[handle as usize]),
                        order_kind: OrderKind::Limit,
                    }),
                };
                self.sequence += 1;
                Command { meta, kind }
            })
            .collect()
    }

    /// Executes built commands back to back; returns the time they took.
    pub fn run(&mut self, commands: &[Command]) -> Duration {
        let started = Instant::now();
        let mut rejected = 0;
        for command in commands {
            let outcome = self.book.execute(command);
            rejected += matches!(outcome, CommandOutcome::Rejected(_)) as u64;
            black_box(outcome);
        }
        let elapsed = started.elapsed();
        self.rejected += rejected;
        elapsed
    }

    /// Aggregated levels `(price_ticks, quantity)` per side, best first.
    pub fn levels(&self) -> BookLevels {
        let level2 = matchcore::Level2::from(&self.book);
        let convert = |levels: &Vec<(Price, Quantity)>| {
            levels
                .iter()
                .map(|(price, quantity)| (price.0 as u32, quantity.0))
                .collect()
        };
        (convert(level2.bid_levels()), convert(level2.ask_levels()))
    }
}
