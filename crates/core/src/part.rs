//! [`Part`]: part `I` of `N` of a stage's work (`--part I/N`), the unit of a Slurm job
//! array's task. A part is a fixed, contiguous range of whole chunks of the work (a
//! dump's shards, a circuit's batches of pairs), so the parts together compute exactly
//! what one run in one go computes, and a later run assembles them.
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Directory of a stage's parts inside its output directory (`OUT/parts/I/`).
pub const PARTS_DIR: &str = "parts";

/// Part `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Part {
    /// 0-based part number, below `count`.
    pub index: usize,
    /// Number of parts, at least 1.
    pub count: usize,
}

impl Part {
    /// The items of this part out of `total` items in chunks of `chunk`: chunks
    /// `[index·C/count, (index+1)·C/count)` of the `C = ⌈total / chunk⌉` chunks. A part
    /// may be empty when there are fewer chunks than parts.
    ///
    /// ```
    /// use circuitry_core::part::Part;
    /// let p = Part { index: 1, count: 2 };
    /// assert_eq!(p.rows(10, 3), 6..10); // chunks 0..4 of 3 rows: part 1 has chunks 2, 3
    /// assert_eq!(Part { index: 0, count: 2 }.rows(10, 3), 0..6);
    /// ```
    pub fn rows(&self, total: usize, chunk: usize) -> Range<usize> {
        let chunks = total.div_ceil(chunk.max(1));
        let bound = |i: usize| (i * chunks / self.count * chunk.max(1)).min(total);
        bound(self.index)..bound(self.index + 1)
    }

    /// The part's directory inside the stage's output directory `out`.
    pub fn dir(&self, out: &Path) -> PathBuf {
        out.join(PARTS_DIR).join(self.index.to_string())
    }

    /// Every part of `count`, in order.
    pub fn all(count: usize) -> impl Iterator<Item = Part> {
        (0..count).map(move |index| Part { index, count })
    }
}

impl std::str::FromStr for Part {
    type Err = String;

    /// `I/N`, e.g. `0/4`.
    fn from_str(text: &str) -> std::result::Result<Part, String> {
        let bad = || format!("{text:?} is not a part: write I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(bad());
        }
        Ok(Part { index, count })
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_work_once_in_order() {
        for (total, chunk, count) in [(10, 3, 2), (7, 1, 3), (2, 1, 4), (0, 5, 2), (100, 7, 6)] {
            let ranges: Vec<_> = Part::all(count).map(|p| p.rows(total, chunk)).collect();
            assert_eq!(ranges.first().map(|r| r.start), Some(0));
            assert_eq!(ranges.last().map(|r| r.end), Some(total));
            for w in ranges.windows(2) {
                assert_eq!(w[0].end, w[1].start, "{total} {chunk} {count}");
            }
            for r in &ranges {
                assert!(r.start % chunk == 0 || r.start == total);
            }
        }
    }

    #[test]
    fn parse_and_print() {
        let p: Part = "2/4".parse().unwrap();
        assert_eq!(p, Part { index: 2, count: 4 });
        assert_eq!(p.to_string(), "2/4");
        for bad in ["4/4", "1", "a/2", "-1/2"] {
            let e = bad.parse::<Part>().unwrap_err();
            assert!(e.contains("write I/N"), "{e}");
        }
    }
}
