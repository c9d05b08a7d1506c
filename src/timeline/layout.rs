//! Packs operation spans into rows for the operations area: each operation goes into the first
//! row free at its start, so concurrent operations sit on separate rows and a sequential
//! history stays on one.

use super::OpSpan;

/// Rows the operations area has at most; operations beyond them share the last row (the page
/// draws it aggregated).
pub const MAX_ROWS: u32 = 12;

/// Assigns `row` to every operation (they are in start order, as the journal started them).
pub fn pack(ops: &mut [OpSpan]) {
    // The end of the last operation placed in each row.
    let mut ends: Vec<u64> = Vec::new();
    for o in ops.iter_mut() {
        let free = ends.iter().position(|&end| end < o.start);
        let row = match free {
            Some(r) => r,
            None if ends.len() < MAX_ROWS as usize => {
                ends.push(0);
                ends.len() - 1
            }
            None => ends.len() - 1,
        };
        ends[row] = ends[row].max(o.stop);
        o.row = u32::try_from(row).unwrap_or(MAX_ROWS - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(start: u64, stop: u64) -> OpSpan {
        OpSpan {
            op: start,
            kind: "add",
            start,
            stop,
            outcome: "ok",
            error: None,
            owner: None,
            disk: None,
            handle: None,
            slot: None,
            row: 99,
            recs: vec![],
        }
    }

    #[test]
    fn overlapping_operations_get_separate_rows_and_sequential_ones_share() {
        let mut ops = vec![op(0, 10), op(5, 20), op(11, 15), op(21, 30)];
        pack(&mut ops);
        let rows: Vec<u32> = ops.iter().map(|o| o.row).collect();
        assert_eq!(rows, vec![0, 1, 0, 0]);
    }

    #[test]
    fn rows_are_capped() {
        let mut ops: Vec<OpSpan> = (0..40).map(|i| op(i, 1000)).collect();
        pack(&mut ops);
        assert!(ops.iter().all(|o| o.row < MAX_ROWS));
        assert_eq!(ops[39].row, MAX_ROWS - 1);
    }
}
