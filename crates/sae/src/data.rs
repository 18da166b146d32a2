//! Checks on activation data and the geometric median used to initialise `b_dec`.
use ndarray::{Array1, ArrayView2};

use crate::{Error, Result};

/// Fail on the first NaN or infinity in `x (rows, cols)`, naming its row and column.
pub fn check_finite(x: ArrayView2<'_, f32>) -> Result<()> {
    for ((row, col), &value) in x.indexed_iter() {
        if !value.is_finite() {
            return Err(Error::NonFinite { row, col, value });
        }
    }
    Ok(())
}

/// The geometric median of the rows of `x (rows, d)` by Weiszfeld's algorithm,
/// `(d)`: start at the mean, then repeatedly take the mean of the rows weighted by
/// `1 / max(‖x_i − y‖, 1e-8)`, until `y` moves less than `tol · (1 + ‖y‖)` or after
/// `max_iter` iterations. Computed in f64. Zero rows give zeros.
pub fn geometric_median(x: ArrayView2<'_, f32>, max_iter: usize, tol: f64) -> Array1<f32> {
    let d = x.ncols();
    if x.nrows() == 0 {
        return Array1::zeros(d);
    }
    let xs = x.mapv(f64::from); // (rows, d)
    let mut y = xs
        .mean_axis(ndarray::Axis(0))
        .unwrap_or_else(|| Array1::zeros(d)); // (d)
    for _ in 0..max_iter {
        let mut num = Array1::<f64>::zeros(d); // (d)
        let mut den = 0.0;
        for row in xs.outer_iter() {
            let diff = &row - &y;
            let w = 1.0 / diff.dot(&diff).sqrt().max(1e-8);
            num.scaled_add(w, &row);
            den += w;
        }
        let next = num / den;
        let step = (&next - &y).mapv(|v| v * v).sum().sqrt();
        let scale = 1.0 + next.dot(&next).sqrt();
        y = next;
        if step < tol * scale {
            break;
        }
    }
    y.mapv(|v| v as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn geometric_median_resists_an_outlier() {
        // Four corners of a unit square plus one far outlier: the mean is dragged
        // towards the outlier, the geometric median stays near the square.
        let x = array![
            [0.0f32, 0.0],
            [1.0, 0.0],
            [0.0, 1.0],
            [1.0, 1.0],
            [100.0, 100.0]
        ];
        let m = geometric_median(x.view(), 200, 1e-10);
        assert!(m[0] > 0.4 && m[0] < 1.0 && m[1] > 0.4 && m[1] < 1.0, "{m}");
        // It minimises the sum of distances: nudging it makes the sum larger.
        let cost = |c: [f64; 2]| -> f64 {
            x.outer_iter()
                .map(|r| ((r[0] as f64 - c[0]).powi(2) + (r[1] as f64 - c[1]).powi(2)).sqrt())
                .sum()
        };
        let at = [m[0] as f64, m[1] as f64];
        for (dx, dy) in [(1e-3, 0.0), (-1e-3, 0.0), (0.0, 1e-3), (0.0, -1e-3)] {
            assert!(cost([at[0] + dx, at[1] + dy]) >= cost(at) - 1e-9);
        }
    }

    #[test]
    fn non_finite_is_located() {
        let x = array![[0.0f32, 1.0], [2.0, f32::NAN]];
        let err = check_finite(x.view()).unwrap_err().to_string();
        assert!(err.contains("row 1, column 1"), "{err}");
    }
}
