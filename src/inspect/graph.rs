//! Verification of the approximate-search (HNSW) index of a store opened read-only (`verify`'s last
//! step): every invariant of `store::graph::check_index`, each broken one a failure.

use super::verify::{Problem, Report, Severity};
use crate::Store;

/// Checks `store`'s index, if it has one, into `report`.
pub(super) fn check(store: &Store, report: &mut Report) {
    match crate::store::graph::check_index(store.inner()) {
        Ok(None) => {}
        Ok(Some(check)) => {
            report.notes.push(format!(
                "approximate index: {} live nodes, {} tombstones, {} neighbour links ({} to tombstones), {} live nodes unreachable from the entry point",
                check.live, check.deleted, check.edges, check.edges_to_tombstones, check.unreachable_live
            ));
            for problem in &check.problems {
                report.fail(Problem::new(Severity::Failure, "index", problem.clone()));
            }
            if check.problem_count > check.problems.len() {
                report.fail(Problem::new(
                    Severity::Failure,
                    "index",
                    format!(
                        "{} more problems of the index",
                        check.problem_count - check.problems.len()
                    ),
                ));
            }
        }
        Err(error) if report.stops(&error) => {}
        Err(error) => report.fail(Problem::new(
            Severity::Failure,
            "index",
            format!("the approximate index cannot be read: {error}"),
        )),
    }
}
