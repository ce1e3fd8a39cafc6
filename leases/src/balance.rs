//! The decision of one sync, as a pure function of what this worker observed: the shard
//! listing, the lease table (with each lease's expiry already judged) and the leases it holds.
//! It says which leases to give up, which free ones to take and which one to steal; the
//! coordinator carries that out with conditional writes, so a decision made on a stale view
//! only loses a race, never breaks a lease.
//!
//! ```text
//! active  = listed, not finished, and (held by a live worker, or every listed parent finished)
//! workers = me + the distinct live holders of active shards
//! share   = ceil(|active| / |workers|)
//! take    = free active shards, lowest id first, until I hold my share
//! steal   = still short, and the most loaded worker holds more than the share: one of its shards
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use adpipe_core::stream::Shard;

/// One lease of the table as this worker sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaseView<'a> {
    /// The shard the lease is for.
    pub(crate) shard_id: &'a str,
    /// Who the table says holds it.
    pub(crate) owner: Option<&'a str>,
    /// Its fencing counter, which a take is conditional on.
    pub(crate) counter: u64,
    /// The shard was read to its end.
    pub(crate) finished: bool,
    /// The counter has not moved for the lease duration, by this worker's clock.
    pub(crate) expired: bool,
}

/// A lease to write this worker's name into, if its counter is still the one observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    /// The shard.
    pub(crate) shard_id: String,
    /// The counter observed, the condition of the write.
    pub(crate) counter: u64,
}

/// A lease to take from a live worker that holds more than its share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Steal {
    /// The lease.
    pub(crate) claim: Claim,
    /// Its holder now.
    pub(crate) victim: String,
}

/// What one sync does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Held leases to give up: their shard is finished or no longer listed.
    pub(crate) release: Vec<String>,
    /// Free leases to take.
    pub(crate) take: Vec<Claim>,
    /// At most one lease to steal, so a group converges without leases changing hands in
    /// bursts.
    pub(crate) steal: Option<Steal>,
    /// The fair share the plan aims at.
    pub(crate) share: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Holder<'a> {
    Me,
    Other(&'a str),
    Free,
}

/// Decides what worker `me`, holding `held`, does about `leases`, given the stream's
/// `listing` (every shard, open and closed).
pub(crate) fn plan(
    me: &str,
    listing: &[Shard],
    leases: &[LeaseView<'_>],
    held: &BTreeSet<String>,
) -> Plan {
    let by_id: HashMap<&str, &LeaseView<'_>> = leases.iter().map(|l| (l.shard_id, l)).collect();
    let listed: HashSet<&str> = listing.iter().map(|s| s.id.as_str()).collect();
    let finished = |id: &str| by_id.get(id).is_some_and(|l| l.finished);
    let parents_done = |shard: &Shard| {
        [&shard.parent_shard_id, &shard.adjacent_parent_shard_id]
            .into_iter()
            .flatten()
            .all(|parent| !listed.contains(parent.as_str()) || finished(parent))
    };

    let release = held
        .iter()
        .filter(|id| {
            !listed.contains(id.as_str()) || by_id.get(id.as_str()).is_none_or(|l| l.finished)
        })
        .cloned()
        .collect();

    let mut active: Vec<(&LeaseView<'_>, Holder<'_>)> = listing
        .iter()
        .filter_map(|shard| {
            let lease = *by_id.get(shard.id.as_str())?;
            let holder = holder(me, held, lease);
            let eligible = holder != Holder::Free || parents_done(shard);
            (!lease.finished && eligible).then_some((lease, holder))
        })
        .collect();
    active.sort_by_key(|(lease, _)| lease.shard_id);

    let mut loads: BTreeMap<&str, Vec<&LeaseView<'_>>> = BTreeMap::new();
    for (lease, holder) in &active {
        if let Holder::Other(owner) = holder {
            loads.entry(owner).or_default().push(lease);
        }
    }
    let workers = loads.len() + 1;
    let share = active.len().div_ceil(workers);
    let mine = active.iter().filter(|(_, h)| *h == Holder::Me).count();

    let take: Vec<Claim> = active
        .iter()
        .filter(|(_, holder)| *holder == Holder::Free)
        .take(share.saturating_sub(mine))
        .map(|(lease, _)| claim(lease))
        .collect();

    let steal = if mine + take.len() < share {
        loads
            .iter()
            // The most loaded worker; of equally loaded ones, the first by name.
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
            .filter(|(_, leases)| leases.len() > share)
            .and_then(|(victim, leases)| {
                leases.first().map(|lease| Steal {
                    claim: claim(lease),
                    victim: (*victim).to_owned(),
                })
            })
    } else {
        None
    };

    Plan {
        release,
        take,
        steal,
        share,
    }
}

/// Who holds `lease`, as far as the decision goes.
fn holder<'a>(me: &str, held: &BTreeSet<String>, lease: &LeaseView<'a>) -> Holder<'a> {
    if held.contains(lease.shard_id) {
        return Holder::Me;
    }
    match lease.owner {
        // NOTE: a lease under my own name that this process does not hold was left by a
        // previous incarnation of this worker (or kept after a write whose answer was lost):
        // free for me at once. Taking it moves the counter, which fences off any process
        // still writing under the old one.
        Some(owner) if owner != me && !lease.expired => Holder::Other(owner),
        _ => Holder::Free,
    }
}

fn claim(lease: &LeaseView<'_>) -> Claim {
    Claim {
        shard_id: lease.shard_id.to_owned(),
        counter: lease.counter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str]) -> Shard {
        Shard {
            id: id.to_owned(),
            starting_hash_key: 0,
            ending_hash_key: u128::MAX,
            parent_shard_id: parents.first().map(|p| (*p).to_owned()),
            adjacent_parent_shard_id: parents.get(1).map(|p| (*p).to_owned()),
            open: true,
        }
    }

    fn shards(ids: &[&str]) -> Vec<Shard> {
        ids.iter().map(|id| shard(id, &[])).collect()
    }

    fn lease<'a>(shard_id: &'a str, owner: Option<&'a str>) -> LeaseView<'a> {
        LeaseView {
            shard_id,
            owner,
            counter: 10,
            finished: false,
            expired: false,
        }
    }

    fn held(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    fn taken(plan: &Plan) -> Vec<&str> {
        plan.take.iter().map(|c| c.shard_id.as_str()).collect()
    }

    #[test]
    fn a_lone_worker_takes_every_free_shard_on_the_counter_it_saw() {
        let listing = shards(&["s0", "s1", "s2", "s3"]);
        let leases: Vec<_> = listing.iter().map(|s| lease(&s.id, None)).collect();
        let plan = plan("a", &listing, &leases, &held(&[]));
        assert_eq!(taken(&plan), ["s0", "s1", "s2", "s3"]);
        assert_eq!(plan.take[0].counter, 10);
        assert_eq!(plan.steal, None);
        assert_eq!(plan.share, 4);
    }

    #[test]
    fn a_newcomer_steals_one_lease_per_sync_from_the_most_loaded_worker() {
        let listing = shards(&["s0", "s1", "s2", "s3", "s4", "s5"]);
        let leases = vec![
            lease("s0", Some("a")),
            lease("s1", Some("a")),
            lease("s2", Some("a")),
            lease("s3", Some("a")),
            lease("s4", Some("b")),
            lease("s5", Some("b")),
        ];
        let plan = plan("c", &listing, &leases, &held(&[]));
        assert_eq!(plan.share, 2);
        assert!(plan.take.is_empty());
        assert_eq!(
            plan.steal,
            Some(Steal {
                claim: Claim {
                    shard_id: "s0".to_owned(),
                    counter: 10
                },
                victim: "a".to_owned(),
            })
        );
    }

    #[test]
    fn a_balanced_group_stays_put_even_when_shards_do_not_divide_evenly() {
        let listing = shards(&["s0", "s1", "s2", "s3", "s4"]);
        let leases = vec![
            lease("s0", Some("a")),
            lease("s1", Some("a")),
            lease("s2", Some("a")),
            lease("s3", Some("b")),
            lease("s4", Some("b")),
        ];
        for (me, mine) in [("a", held(&["s0", "s1", "s2"])), ("b", held(&["s3", "s4"]))] {
            let plan = plan(me, &listing, &leases, &mine);
            assert_eq!(
                plan,
                Plan {
                    share: 3,
                    ..Plan::default()
                },
                "worker {me}"
            );
        }
    }

    #[test]
    fn more_workers_than_shards_leaves_the_extra_worker_idle() {
        let listing = shards(&["s0", "s1"]);
        let leases = vec![lease("s0", Some("a")), lease("s1", Some("b"))];
        let plan = plan("c", &listing, &leases, &held(&[]));
        assert_eq!(
            plan,
            Plan {
                share: 1,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn leases_of_a_dead_worker_are_free_once_expired_and_it_no_longer_counts() {
        let listing = shards(&["s0", "s1", "s2", "s3"]);
        let mut leases = vec![
            lease("s0", Some("a")),
            lease("s1", Some("a")),
            lease("s2", Some("b")),
            lease("s3", Some("b")),
        ];
        for dead in &mut leases[..2] {
            dead.expired = true;
        }
        let plan = plan("b", &listing, &leases, &held(&["s2", "s3"]));
        assert_eq!(plan.share, 4);
        assert_eq!(taken(&plan), ["s0", "s1"]);
    }

    #[test]
    fn a_lease_under_my_name_that_this_process_does_not_hold_is_free() {
        let listing = shards(&["s0"]);
        let leases = vec![lease("s0", Some("a"))];
        let plan = plan("a", &listing, &leases, &held(&[]));
        assert_eq!(taken(&plan), ["s0"]);
    }

    #[test]
    fn a_child_waits_until_every_listed_parent_is_finished() {
        let listing = vec![
            shard("s0", &[]),
            shard("s1", &[]),
            shard("s2", &["s0", "s1"]),
        ];
        let mut leases = vec![lease("s0", None), lease("s1", None), lease("s2", None)];
        leases[0].finished = true;
        assert_eq!(taken(&plan("a", &listing, &leases, &held(&[]))), ["s1"]);

        leases[1].finished = true;
        assert_eq!(taken(&plan("a", &listing, &leases, &held(&[]))), ["s2"]);

        // A parent trimmed from the stream no longer holds its child back.
        let trimmed = vec![shard("s2", &["s0", "s1"])];
        let unfinished = vec![lease("s2", None)];
        assert_eq!(taken(&plan("a", &trimmed, &unfinished, &held(&[]))), ["s2"]);
    }

    #[test]
    fn finished_and_unlisted_leases_are_given_up_and_never_taken() {
        let listing = shards(&["s0", "s1"]);
        let mut leases = vec![lease("s0", Some("a")), lease("s1", None)];
        leases[0].finished = true;
        leases[1].finished = true;
        let plan = plan("a", &listing, &leases, &held(&["s0", "gone"]));
        assert_eq!(plan.release, ["gone", "s0"]);
        assert!(plan.take.is_empty());
        assert_eq!(plan.steal, None);
    }

    #[test]
    fn a_worker_below_its_share_takes_free_shards_before_stealing() {
        let listing = shards(&["s0", "s1", "s2", "s3"]);
        let leases = vec![
            lease("s0", Some("a")),
            lease("s1", Some("a")),
            lease("s2", Some("a")),
            lease("s3", None),
        ];
        let plan = plan("b", &listing, &leases, &held(&[]));
        assert_eq!(taken(&plan), ["s3"]);
        assert_eq!(
            plan.steal.map(|s| s.victim),
            Some("a".to_owned()),
            "one free shard leaves b below its share of 2, and a holds 3"
        );
    }
}
