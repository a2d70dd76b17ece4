//! The kernel against hand-computed grids.

use super::walk::FEW_GENES;
use super::*;
use crate::fused::{AggFunc, AggSpec, ValueFilter};
use annql_store::SparseBlock;
use annql_store::arrow::array::{Float32Array, Float64Array};
use datafusion::logical_expr::Operator;
use std::sync::Arc;

fn block() -> SparseBlock {
    // 3 cells × 3 genes: row 0 = [1, 0, 2], row 1 = [0, 3, 0], row 2 = [4, 0, 0].
    SparseBlock {
        major: 0..3,
        indptr: vec![0, 2, 3, 4],
        indices: vec![0, 2, 1, 0].into(),
        data: Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0])),
    }
}

#[test]
fn sums_by_group_and_slot() -> Result<()> {
    let aggs = [AggSpec {
        func: AggFunc::Sum,
        filter: None,
    }];
    let mut acc = Accumulators::new(2 * 3, &aggs, false);
    // Cells 0 and 2 in group 0, cell 1 in group 1; every gene its own slot.
    acc.fold(&block(), true, &[0, 1, 0], &GeneSlots::new(&[0, 1, 2]), 3)?;
    let sums = acc.channels[0].sum.clone().unwrap_or_default();
    assert_eq!(sums, vec![5.0, 0.0, 2.0, 0.0, 3.0, 0.0]);
    assert!(acc.touched(0) && !acc.touched(1) && acc.touched(4));
    Ok(())
}

#[test]
fn stored_zeros_of_either_sign_touch_their_cells() -> Result<()> {
    let aggs = [AggSpec {
        func: AggFunc::Sum,
        filter: None,
    }];
    // Row 0 stores −0.0 at gene 0 and +0.0 at gene 1; row 1 stores 2 and −2 at gene 2.
    let block = SparseBlock {
        major: 0..2,
        indptr: vec![0, 2, 4],
        indices: vec![0, 1, 2, 2].into(),
        data: Arc::new(Float64Array::from(vec![-0.0, 0.0, 2.0, -2.0])),
    };
    let slot = [0, 1, 2, 3];
    let mut acc = Accumulators::new(4, &aggs, false);
    acc.fold(&block, true, &[0, 0], &GeneSlots::new(&slot), 4)?;
    let touched: Vec<bool> = (0..4).map(|k| acc.touched(k)).collect();
    assert_eq!(touched, [true, true, true, false]);
    // Each sums to zero, reported as +0.0 as a sum from +0.0 would be.
    for k in 0..3 {
        match finish(&acc, 0, &aggs[0], k, 0) {
            Value::Float(v) => assert_eq!(v.to_bits(), 0.0_f64.to_bits(), "cell {k}"),
            other => panic!("cell {k}: {other:?}"),
        }
    }
    Ok(())
}

#[test]
fn dense_mean_counts_zeros_and_filters_split_channels() -> Result<()> {
    let aggs = [
        AggSpec {
            func: AggFunc::Avg,
            filter: None,
        },
        AggSpec {
            func: AggFunc::Count,
            filter: Some(ValueFilter {
                op: Operator::Gt,
                constant: 1.5,
            }),
        },
    ];
    let mut acc = Accumulators::new(3, &aggs, true);
    // One group, every cell; gene 1 dropped.
    acc.fold(
        &block(),
        true,
        &[0, 0, 0],
        &GeneSlots::new(&[0, NONE, 2]),
        3,
    )?;
    let (_, of) = channel_of(&aggs);
    // Gene 0: values 1 and 4 over 3 cells → mean 5/3; one zero.
    let zeros = 3 - acc.stored(0);
    assert_eq!(
        finish(&acc, of[0], &aggs[0], 0, zeros),
        Value::Float(5.0 / 3.0)
    );
    assert_eq!(finish(&acc, of[1], &aggs[1], 0, zeros), Value::Int(1));
    Ok(())
}

#[test]
fn few_genes_are_searched_in_sorted_rows_and_walked_in_unsorted_ones() -> Result<()> {
    let aggs = [AggSpec {
        func: AggFunc::Sum,
        filter: None,
    }];
    // Row 0 = [1, 0, 2] stored out of order, row 1 = [5, 5 (duplicate), 3] sorted.
    let block = SparseBlock {
        major: 0..2,
        indptr: vec![0, 2, 5],
        indices: vec![2, 0, 0, 0, 2].into(),
        data: Arc::new(Float32Array::from(vec![2.0, 1.0, 5.0, 5.0, 3.0])),
    };
    let genes = GeneSlots::new(&[0, NONE, 1]);
    assert_eq!(genes.picked.as_deref(), Some(&[0, 2][..]));
    let mut acc = Accumulators::new(2 * 2, &aggs, false);
    acc.fold(&block, true, &[0, 1], &genes, 2)?;
    let sums = acc.channels[0].sum.clone().unwrap_or_default();
    assert_eq!(sums, vec![1.0, 2.0, 10.0, 3.0]);
    // Past FEW_GENES kept genes nothing is listed, and every row is walked.
    let all: Vec<u32> = (0..FEW_GENES as u32 + 1).collect();
    assert!(GeneSlots::new(&all).picked.is_none());
    Ok(())
}

#[test]
fn every_gene_kept_adds_by_index_as_the_slot_lookup_does() -> Result<()> {
    // 3 cells × 20 genes (more than FEW_GENES, so rows are walked), 2 groups.
    let genes = 20u32;
    let block = SparseBlock {
        major: 0..3,
        indptr: vec![0, 4, 5, 8],
        indices: vec![0, 3, 17, 19, 5, 1, 5, 19].into(),
        data: Arc::new(Float32Array::from(vec![
            1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0,
        ])),
    };
    let slot: Vec<u32> = (0..genes).collect();
    let by_index = GeneSlots::new(&slot);
    assert!(by_index.identity);
    assert!(!GeneSlots::new(&[0, NONE, 2]).identity);
    assert!(!GeneSlots::new(&[1, 0]).identity);
    let by_lookup = GeneSlots {
        identity: false,
        ..by_index.clone()
    };
    let aggs = [AggSpec {
        func: AggFunc::Sum,
        filter: None,
    }];
    let row_group = [1, 0, 1];
    let mut sums = Vec::new();
    for genes_of in [&by_index, &by_lookup] {
        let mut acc = Accumulators::new(2 * genes as usize, &aggs, false);
        acc.fold(&block, true, &row_group, genes_of, genes as usize)?;
        sums.push(acc.channels[0].sum.clone().unwrap_or_default());
    }
    assert_eq!(sums[0], sums[1]);
    // Group 1 (cells 0 and 2): gene 19 got 4 + 8.
    assert_eq!(sums[0][20 + 19], 12.0);
    assert_eq!(sums[0][5], 5.0);
    Ok(())
}

#[test]
fn tiled_grids_give_the_sums_of_a_whole_one() -> Result<()> {
    // 2 groups × 300,000 slots: 4.8 MB of sums, past TILED_MIN_BYTES; 10 tiles of entries
    // (CSC folds), or 2 of rows, a group each (CSR folds).
    let slots = 300_000;
    let block = SparseBlock {
        major: 0..3,
        indptr: vec![0, 3, 4, 6],
        indices: vec![0, 150_000, 299_999, 299_999, 7, 150_000].into(),
        data: Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
    };
    let slot: Vec<u32> = (0..slots as u32).collect();
    let genes = GeneSlots::new(&slot);
    // Cells 0 and 2 in group 1, cell 1 in group 0.
    let row_group = [1, 0, 1];
    for aggs in [
        vec![AggSpec {
            func: AggFunc::Sum,
            filter: None,
        }],
        vec![AggSpec {
            func: AggFunc::Avg,
            filter: None,
        }],
        vec![
            AggSpec {
                func: AggFunc::Sum,
                filter: None,
            },
            AggSpec {
                func: AggFunc::Count,
                filter: Some(ValueFilter {
                    op: Operator::Gt,
                    constant: 2.5,
                }),
            },
        ],
    ] {
        let len = 2 * slots;
        assert!(tiled(len, &aggs, false));
        let mut whole = Accumulators::new(len, &aggs, false);
        let tile_len = 1 << TILE_BITS;
        let tiles = SharedTiles::new(len, tile_len, &aggs, false);
        assert_eq!(tiles.count(), len.div_ceil(tile_len));
        let mut scatter = Scatter::default();
        // Tiles of whole groups, fed rows: one group per tile at this many slots.
        let tile_groups = row_tile_groups(slots);
        let row_tiles = SharedTiles::new(len, tile_groups * slots, &aggs, false);
        assert_eq!((tile_groups, row_tiles.count()), (1, 2));
        let mut rows = RowBuckets::default();
        // Folded twice: the buckets are emptied and reused.
        let window = [block.clone()];
        for _ in 0..2 {
            whole.fold(&block, true, &row_group, &genes, slots)?;
            scatter.fill(&block, true, &row_group, &genes, slots, len)?;
            for (t, entries) in scatter.buckets() {
                tiles.with(t, |tile| tile.add_entries(entries))?;
            }
            rows.fill(&window, &row_group, tile_groups, row_tiles.count());
            for t in rows.tiles().collect::<Vec<_>>() {
                let first = t * tile_groups;
                row_tiles.with(t, |tile| {
                    tile.add_rows(&window, rows.bucket(t), &row_group, &genes, slots, first)
                })??;
            }
        }
        let whole = Grid::whole(whole);
        for grid in [tiles.into_grid()?, row_tiles.into_grid()?] {
            let (_, of) = channel_of(&aggs);
            let mut touched = 0;
            for k in 0..len {
                assert_eq!(grid.touched(k), whole.touched(k), "cell {k}");
                touched += usize::from(grid.touched(k));
                for (a, &c) in aggs.iter().zip(&of) {
                    assert_eq!(
                        grid.finish(c, a, k, 0),
                        whole.finish(c, a, k, 0),
                        "cell {k}"
                    );
                }
            }
            assert_eq!(touched, 5);
            let sum = aggs.iter().position(|a| a.func == AggFunc::Sum);
            if let Some(j) = sum {
                assert_eq!(
                    grid.finish(of[j], &aggs[j], slots + 150_000, 0),
                    Value::Float(16.0)
                );
                assert_eq!(grid.finish(of[j], &aggs[j], 299_999, 0), Value::Float(8.0));
            }
        }
    }
    Ok(())
}

#[test]
fn csc_blocks_map_cells_through_row_group() -> Result<()> {
    let aggs = [AggSpec {
        func: AggFunc::Max,
        filter: None,
    }];
    let mut acc = Accumulators::new(3, &aggs, false);
    // The same numbers read as 3 genes × 3 cells.
    acc.fold(&block(), false, &[0, 1, 2], &GeneSlots::new(&[0, 0, 0]), 1)?;
    assert_eq!(finish(&acc, 0, &aggs[0], 0, 0), Value::Float(4.0));
    assert_eq!(finish(&acc, 0, &aggs[0], 2, 0), Value::Float(2.0));
    Ok(())
}
