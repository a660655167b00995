//! Book-change bookkeeping: which levels a command touched, and one `BookLevelChanged` per
//! level whose `(gpus, orders)` moved, in first-touch order.
//!
//! Every change to a ladder goes through [`Engine::touch`] first, which remembers the level's
//! totals before the command; [`Engine::flush_touched`] compares them after.

use super::Engine;
use crate::event::Event;
use crate::keys::{LevelKey, PoolKey};
use crate::types::Side;

/// A book level touched by the current command, with its totals before the first touch.
#[derive(Clone, Copy, Debug)]
pub(super) struct Touched {
    pool: PoolKey,
    side: Side,
    level: LevelKey,
    before: (u64, u32),
}

impl Engine {
    pub(super) fn touch(&mut self, pool: PoolKey, side: Side, level: LevelKey) {
        // Newest first: a command usually touches the same level again right away.
        if self
            .touched
            .iter()
            .rev()
            .any(|t| t.pool == pool && t.side == side && t.level == level)
        {
            return;
        }
        let before = self.pools[pool].level_totals(side, level);
        self.touched.push(Touched {
            pool,
            side,
            level,
            before,
        });
    }

    /// Emits one `BookLevelChanged` per level whose totals moved during the command.
    pub(super) fn flush_touched(&mut self, out: &mut Vec<Event>) {
        for touched in self.touched.drain(..) {
            let pool = &self.pools[touched.pool];
            let now = pool.level_totals(touched.side, touched.level);
            if now != touched.before {
                out.push(Event::BookLevelChanged {
                    pool: pool.name.clone(),
                    side: touched.side,
                    price: pool.price_of(touched.level),
                    gpus: now.0,
                    orders: now.1,
                });
            }
        }
    }
}
