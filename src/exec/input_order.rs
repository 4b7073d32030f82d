//! Input that is already ordered by the ORDER BY column is never sorted again.
//!
//! The keyed-state operator needs each partition's rows in ORDER BY order. When its input is
//! one ordered stream, DataFusion's hash repartition keeps that order. When the input is
//! several ordered streams — one file split into byte ranges, several files — a plain hash
//! repartition interleaves them, and DataFusion then sorts every row again (unless
//! `datafusion.optimizer.prefer_existing_sort` is set). This rule, which runs right after
//! DataFusion's `EnsureRequirements`, replaces such a sort by what keeps the existing order:
//!
//! - pieces that follow each other in ORDER BY order (the byte ranges of one file; files
//!   whose statistics show that their ranges of the leading ORDER BY column do not overlap)
//!   are read one after the other, as one stream, by [`OrderedConcatExec`], which decodes the
//!   next pieces ahead on other cores;
//! - otherwise the ordered streams are merged: by an order-preserving hash repartition, or,
//!   into a single partition, by a sort-preserving merge. A scan whose one group holds several
//!   files (which DataFusion reads one after the other, unordered) is recut into a group per
//!   file for it.
//!
//! The replacement gives every ordering the sort gave, so nothing above the operator loses an
//! ordering it relies on.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

use super::operator::KeyedStateExec;
use super::ordered_concat::OrderedConcatExec;

/// The rule's name in DataFusion's optimizer list.
pub const RULE_NAME: &str = "fintech_keep_input_order";

/// Replaces a sort below a keyed-state operator whose input is already ordered.
#[derive(Debug, Default)]
pub struct KeepInputOrder;

impl PhysicalOptimizerRule for KeepInputOrder {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<KeyedStateExec>() else {
                return Ok(Transformed::no(node));
            };
            match unsorted(exec.input())? {
                Some(input) => Ok(Transformed::yes(replace_children_if_necessary(
                    Arc::clone(&node),
                    vec![input],
                )?)),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        RULE_NAME
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What replaces `child` if it is a sort over streams that already have its order.
fn unsorted(child: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(merge) = child.downcast_ref::<SortPreservingMergeExec>() {
        if merge.fetch().is_some() {
            return Ok(None);
        }
        return Ok(match regroup(merge.input(), merge.expr())? {
            Some(Regrouped {
                plan,
                follows: true,
            }) => Some(Arc::new(OrderedConcatExec::new(plan))),
            _ => None,
        });
    }
    let Some(sort) = child.downcast_ref::<SortExec>() else {
        return Ok(None);
    };
    if sort.fetch().is_some() {
        return Ok(None);
    }
    let below = sort.input();
    if let Some(repartition) = below.downcast_ref::<RepartitionExec>() {
        if repartition.preserve_order() {
            return Ok(None);
        }
        let Some(ordered) = ordered_source(repartition.input(), sort.expr())? else {
            return Ok(None);
        };
        // Over one ordered stream a hash repartition keeps its order as it is; over several,
        // it merges them per output partition.
        let keeping = RepartitionExec::try_new(ordered, repartition.partitioning().clone())?
            .with_preserve_order();
        return Ok(Some(Arc::new(keeping)));
    }
    if sort.preserve_partitioning() {
        return Ok(None);
    }
    // One partition wanted: the sort is over a merge of partitions, or over a scan whose one
    // group holds several files.
    let source = match below.downcast_ref::<CoalescePartitionsExec>() {
        Some(coalesce) => coalesce.input(),
        None => below,
    };
    let Some(ordered) = ordered_source(source, sort.expr())? else {
        return Ok(None);
    };
    if ordered.output_partitioning().partition_count() == 1 {
        return Ok(Some(ordered));
    }
    let merge = SortPreservingMergeExec::new(sort.expr().clone(), ordered);
    Ok(Some(Arc::new(merge)))
}

/// `source` as streams each ordered by `ordering`: one stream of consecutive pieces read in
/// order, the source itself when its partitions are ordered, or its files in groups of their
/// own; `None` when none of these has the order.
fn ordered_source(
    source: &Arc<dyn ExecutionPlan>,
    ordering: &LexOrdering,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let regrouped = regroup(source, ordering)?;
    Ok(match regrouped {
        Some(Regrouped {
            plan,
            follows: true,
        }) => Some(Arc::new(OrderedConcatExec::new(plan))),
        _ if has_order(source, ordering)? => Some(Arc::clone(source)),
        Some(Regrouped { plan, .. }) => Some(plan),
        None => None,
    })
}

/// Whether every partition of `plan` is ordered as `ordering` says.
fn has_order(plan: &Arc<dyn ExecutionPlan>, ordering: &LexOrdering) -> Result<bool> {
    plan.equivalence_properties()
        .ordering_satisfy(ordering.iter().cloned())
}

/// A file scan recut into one group per piece (a file, or a byte range of one).
struct Regrouped {
    plan: Arc<dyn ExecutionPlan>,
    /// Whether the groups follow each other in the ORDER BY order, so that reading them one
    /// after the other gives it.
    follows: bool,
}

/// `plan`, if it is a file scan of several pieces each ordered by `ordering`: the same scan
/// with one group per piece. The pieces of a file are in file order; files follow each other
/// when their statistics show that each one's range of the leading ORDER BY column ends where
/// the next one's begins, or before, and are then put in that order.
fn regroup(plan: &Arc<dyn ExecutionPlan>, ordering: &LexOrdering) -> Result<Option<Regrouped>> {
    let Some(scan) = plan.downcast_ref::<DataSourceExec>() else {
        return Ok(None);
    };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
        return Ok(None);
    };
    let pieces = config.file_groups.iter().map(|g| g.len()).sum::<usize>();
    if pieces < 2 || config.limit.is_some() {
        return Ok(None);
    }
    // The pieces of each file, files in the order first seen.
    let mut files: Vec<Vec<PartitionedFile>> = Vec::new();
    for piece in config.file_groups.iter().flat_map(|g| g.iter()) {
        match files
            .iter_mut()
            .find(|f| f[0].object_meta.location == piece.object_meta.location)
        {
            Some(file) => file.push(piece.clone()),
            None => files.push(vec![piece.clone()]),
        }
    }
    for file in &mut files {
        file.sort_by_key(|p| p.range.as_ref().map_or(0, |r| r.start));
    }
    let mut follows = true;
    if files.len() > 1 {
        // Files in order of their leading ORDER BY values, each ending where the next begins.
        let index = ordering
            .first()
            .expr
            .downcast_ref::<Column>()
            .and_then(|c| config.file_schema().index_of(c.name()).ok());
        // A file's (first, last) leading ORDER BY values in the ordering's direction; files
        // that may hold NULLs are not placed.
        let descending = ordering.first().options.descending;
        let range = |file: &[PartitionedFile]| -> Option<(ScalarValue, ScalarValue)> {
            let stats = file[0].statistics.as_ref()?.column_statistics.get(index?)?;
            if stats.null_count.get_value() != Some(&0) {
                return None;
            }
            let (min, max) = (stats.min_value.get_value()?, stats.max_value.get_value()?);
            Some(if descending {
                (max.clone(), min.clone())
            } else {
                (min.clone(), max.clone())
            })
        };
        let ranges = files.iter().map(|f| range(f)).collect::<Option<Vec<_>>>();
        follows = ranges.is_some_and(|ranges| follow(&mut files, &ranges, descending));
    }
    let groups: Vec<FileGroup> = files
        .into_iter()
        .flatten()
        .map(|piece| FileGroup::new(vec![piece]))
        .collect();
    let recut = FileScanConfigBuilder::from(config.clone())
        .with_file_groups(groups)
        .build();
    let recut: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(recut);
    if !has_order(&recut, ordering)? {
        return Ok(None);
    }
    Ok(Some(Regrouped {
        plan: recut,
        follows,
    }))
}

/// Whether the files, whose leading ORDER BY values span `ranges`, follow each other in some
/// order; if so, puts them in it.
fn follow(
    files: &mut Vec<Vec<PartitionedFile>>,
    ranges: &[(ScalarValue, ScalarValue)],
    descending: bool,
) -> bool {
    use std::cmp::Ordering::{self, Equal, Less};
    // `a` before `b` in the ordering's direction.
    let cmp = |a: &ScalarValue, b: &ScalarValue| {
        let o = a.partial_cmp(b);
        if descending {
            o.map(Ordering::reverse)
        } else {
            o
        }
    };
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| cmp(&ranges[a].0, &ranges[b].0).unwrap_or(Equal));
    let follows = order
        .windows(2)
        .all(|w| matches!(cmp(&ranges[w[0]].1, &ranges[w[1]].0), Some(Less | Equal)));
    if !follows {
        return false;
    }
    let mut sorted = Vec::with_capacity(files.len());
    for i in order {
        sorted.push(std::mem::take(&mut files[i]));
    }
    *files = sorted;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<Vec<PartitionedFile>> {
        names
            .iter()
            .map(|n| vec![PartitionedFile::new(*n, 1)])
            .collect()
    }

    fn names(files: &[Vec<PartitionedFile>]) -> Vec<String> {
        files
            .iter()
            .map(|f| f[0].object_meta.location.to_string())
            .collect()
    }

    fn range(a: i64, b: i64) -> (ScalarValue, ScalarValue) {
        (ScalarValue::Int64(Some(a)), ScalarValue::Int64(Some(b)))
    }

    #[test]
    fn files_that_follow_each_other_are_put_in_order() {
        // Listed out of order; the second ends where the first begins (a shared timestamp).
        let mut f = files(&["b", "a", "c"]);
        assert!(follow(
            &mut f,
            &[range(10, 19), range(0, 10), range(20, 29)],
            false
        ));
        assert_eq!(names(&f), ["a", "b", "c"]);
    }

    #[test]
    fn overlapping_files_do_not_follow_and_stay_as_they_are() {
        let mut f = files(&["a", "b"]);
        assert!(!follow(&mut f, &[range(0, 10), range(5, 15)], false));
        assert_eq!(names(&f), ["a", "b"]);
    }

    #[test]
    fn descending_order_follows_from_the_largest_values() {
        // (first, last) in the ordering's direction: the newest file first.
        let mut f = files(&["old", "new"]);
        assert!(follow(&mut f, &[range(9, 0), range(19, 10)], true));
        assert_eq!(names(&f), ["new", "old"]);
    }
}
