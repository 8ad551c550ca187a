//! The report's closed forms, in log space so that probabilities far below
//! `f64::MIN_POSITIVE` (1e-308) keep their value: every function returns a
//! natural logarithm, and callers print `log10`.
//!
//! Binomial ratios raised to powers of `n` are computed factor by factor
//! with `ln_1p`, so that `C(n-m-1,k)^(n-m) / C(n-1,k)^n` does not lose its
//! digits to cancellation even for n = 10^6.

use std::sync::OnceLock;

/// `ln(n!)`: a table below 1024, Stirling's series above (truncation error
/// below 1e-20 there).
pub fn ln_factorial(n: u64) -> f64 {
    static TABLE: OnceLock<Vec<f64>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = vec![0.0; 1024];
        for i in 1..1024 {
            t[i] = t[i - 1] + (i as f64).ln();
        }
        t
    });
    if let Some(&v) = table.get(n as usize) {
        return v;
    }
    let x = n as f64;
    let x2 = x * x;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x2)
        + 1.0 / (1260.0 * x * x2 * x2)
}

/// `ln C(n, k)`; `-inf` when `k > n`.
pub fn ln_binom(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let k = k.min(n - k);
    if k <= 64 {
        // Exact to a few ulps: no large factorials cancelling each other.
        return (0..k)
            .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
            .sum();
    }
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// `ln(C(a, k) / C(b, k))` for `a <= b`, as `sum ln(1 - (b-a)/(b-i))`.
pub fn ln_binom_ratio(a: u64, b: u64, k: u64) -> f64 {
    debug_assert!(a <= b);
    if k > a {
        return f64::NEG_INFINITY;
    }
    let d = (b - a) as f64;
    (0..k).map(|i| (-d / (b - i) as f64).ln_1p()).sum()
}

/// `ln(sum exp(x))` without overflow; `-inf` for an empty or all `-inf` input.
pub fn ln_sum_exp(xs: impl IntoIterator<Item = f64>) -> f64 {
    let xs: Vec<f64> = xs.into_iter().filter(|x| *x > f64::NEG_INFINITY).collect();
    let Some(max) = xs.iter().copied().reduce(f64::max) else {
        return f64::NEG_INFINITY;
    };
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

/// (3.2): `ln P(arity = a + k)`, the in-degree being binomial
/// `B(n-1, k/(n-1))`.
pub fn ln_arity_pmf(n: u64, k: u64, a: u64) -> f64 {
    if a > n - 1 {
        return f64::NEG_INFINITY;
    }
    let p = k as f64 / (n - 1) as f64;
    ln_binom(n - 1, a) + a as f64 * p.ln() + (n - 1 - a) as f64 * (-p).ln_1p()
}

/// The summation range of (4.1): the report prints `m` from `2k+1` to
/// `n-2k+1`, while its proof (4.9) gives `n-2k-1`; both are available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range41 {
    /// As printed in (4.1): up to `n - 2k + 1`.
    Printed,
    /// As derived in (4.9): up to `n - 2k - 1`.
    Derived,
}

/// (4.1): `ln` of the bound on the probability that the network is
/// disconnected.
pub fn ln_bound_disconnected(n: u64, k: u64, range: Range41) -> f64 {
    let lo = 2 * k + 1;
    let hi = match range {
        Range41::Printed => (n + 1).saturating_sub(2 * k),
        Range41::Derived => n.saturating_sub(2 * k + 1),
    };
    if n < 2 || k == 0 || k + 1 > n || lo > hi {
        return f64::NEG_INFINITY;
    }
    ln_sum_exp((lo..=hi).map(|m| {
        // C(n-1,m-1) C(n-m-1,k)^(n-m) C(m-1,k)^m / C(n-1,k)^n
        ln_binom(n - 1, m - 1)
            + (n - m) as f64 * ln_binom_ratio(n - m - 1, n - 1, k)
            + m as f64 * ln_binom_ratio(m - 1, n - 1, k)
    }))
}

/// (4.20): `ln` of the bound on the probability that two given nodes cannot
/// reach each other once `q` random other nodes are dead.
pub fn ln_bound_unreachable(n: u64, k: u64, q: u64) -> f64 {
    if n < q + 2 || k + 1 > n {
        return f64::NEG_INFINITY;
    }
    ln_sum_exp((1..n - q).map(|m| {
        // C(n-2-q,m-1) C(n-m-1,k)^(n-m-q) C(m+q-1,k)^m / C(n-1,k)^(n-q)
        ln_binom(n - 2 - q, m - 1)
            + (n - m - q) as f64 * ln_binom_ratio(n - m - 1, n - 1, k)
            + m as f64 * ln_binom_ratio(m + q - 1, n - 1, k)
    }))
}

/// (4.16): the expected number of nodes at each distance, `u_0 = 1`,
/// `u_1 = 2k`, `u_{d+1} = (1 - sum_{i<=d} u_i / n) (2k-1) u_d`, until the
/// cumulative count reaches `n`.
pub fn heuristic_levels(n: f64, k: f64) -> Vec<f64> {
    let mut u = vec![1.0, 2.0 * k];
    let mut total = 1.0 + 2.0 * k;
    while total < n && u.len() < 1000 {
        let last = u[u.len() - 1];
        let next = (1.0 - total / n) * (2.0 * k - 1.0) * last;
        if next <= 0.0 {
            break;
        }
        u.push(next);
        total += next;
    }
    u
}

/// (4.17): the heuristic average distance in hops to the *other* nodes.
/// Levels fill up in order; the last level takes whatever of `n` is left.
/// (4.17) as printed omits the division; we divide by `n - 1` so that it
/// compares with a simulation over distinct pairs. The report's own
/// availability figures divide by `n` (self at distance 0 included).
pub fn heuristic_distance(n: f64, k: f64, include_self: bool) -> f64 {
    let u = heuristic_levels(n, k);
    let (mut sum, mut placed) = (0.0, 0.0);
    for (d, &ud) in u.iter().enumerate() {
        let take = ud.min(n - placed);
        sum += d as f64 * take;
        placed += take;
        if placed >= n {
            break;
        }
    }
    if include_self {
        sum / n
    } else {
        sum / (n - 1.0)
    }
}

/// The Moore bound on the average distance of a graph of `n` nodes and
/// degree `deg`: levels of `deg (deg-1)^(d-1)` nodes filled in order; no
/// graph of that degree does better (report §2.1).
pub fn moore_distance(n: f64, deg: f64) -> f64 {
    let (mut sum, mut placed, mut level, mut d) = (0.0, 1.0, deg, 1.0);
    while placed < n {
        let take = level.min(n - placed);
        sum += d * take;
        placed += take;
        level *= deg - 1.0;
        d += 1.0;
    }
    sum / (n - 1.0)
}

/// (4.29): unavailability = average distance × recovery time / MTBF.
pub fn unavailability(avg_distance: f64, recover_secs: f64, mtbf_secs: f64) -> f64 {
    avg_distance * recover_secs / mtbf_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binom_u128(n: u128, k: u128) -> u128 {
        if k > n {
            return 0;
        }
        (0..k).fold(1, |acc, i| acc * (n - i) / (i + 1))
    }

    fn pow(b: u128, e: u128) -> u128 {
        (0..e).fold(1u128, |acc, _| acc * b)
    }

    /// (4.1) for n = 12, k = 2 with exact integers: the sum of the numerators
    /// over `C(11,2)^12 = 55^12`.
    #[test]
    fn bound_41_matches_exact_integers_for_small_n() {
        let (n, k) = (12u128, 2u128);
        let denom = pow(binom_u128(n - 1, k), n) as f64;
        for (range, hi) in [
            (Range41::Printed, n - 2 * k + 1),
            (Range41::Derived, n - 2 * k - 1),
        ] {
            let num: u128 = (2 * k + 1..=hi)
                .map(|m| {
                    binom_u128(n - 1, m - 1)
                        * pow(binom_u128(n - m - 1, k), n - m)
                        * pow(binom_u128(m - 1, k), m)
                })
                .sum();
            let exact = num as f64 / denom;
            let ours = ln_bound_disconnected(12, 2, range).exp();
            assert!(
                (ours / exact - 1.0).abs() < 1e-12,
                "{range:?}: {ours} vs {exact}"
            );
        }
        // By hand, derived range: m = 5..=7 gives 330*15^7*6^5 +
        // 462*10^6*10^6 + 462*6^5*15^7 over 55^12.
        let by_hand = (330.0 * 15f64.powi(7) * 6f64.powi(5)
            + 462.0 * 1e12
            + 462.0 * 6f64.powi(5) * 15f64.powi(7))
            / 55f64.powi(12);
        let ours = ln_bound_disconnected(12, 2, Range41::Derived).exp();
        assert!((ours / by_hand - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bound_420_matches_exact_integers_for_small_n() {
        let (n, k) = (10u128, 2u128);
        for q in 0..=6u128 {
            let denom = pow(binom_u128(n - 1, k), n - q) as f64;
            let num: u128 = (1..n - q)
                .map(|m| {
                    binom_u128(n - 2 - q, m - 1)
                        * pow(binom_u128(n - m - 1, k), n - m - q)
                        * pow(binom_u128(m + q - 1, k), m)
                })
                .sum();
            let exact = num as f64 / denom;
            let ours = ln_bound_unreachable(10, 2, q as u64).exp();
            assert!(
                (ours / exact - 1.0).abs() < 1e-12,
                "q={q}: {ours} vs {exact}"
            );
        }
    }

    #[test]
    fn tiny_probabilities_stay_finite_in_log_space() {
        // Far below f64's range, yet finite and decreasing in k.
        let l5 = ln_bound_disconnected(1_000_000, 5, Range41::Printed);
        let l10 = ln_bound_disconnected(1_000_000, 10, Range41::Printed);
        assert!(l10.is_finite() && l5.is_finite());
        assert!(l10 / std::f64::consts::LN_10 < -308.0);
        assert!(l10 < l5);
    }

    #[test]
    fn ln_binom_is_exact_for_small_and_large_arguments() {
        assert!((ln_binom(10, 3).exp() - 120.0).abs() < 1e-9);
        assert!(
            (ln_binom(2000, 1000) - (ln_factorial(2000) - 2.0 * ln_factorial(1000))).abs() < 1e-9
        );
        // Stirling above the table agrees with summing logs.
        let direct: f64 = (1..=5000u64).map(|i| (i as f64).ln()).sum();
        assert!((ln_factorial(5000) / direct - 1.0).abs() < 1e-13);
        assert_eq!(ln_binom(3, 4), f64::NEG_INFINITY);
    }

    /// (3.2) for k = 10, n = 1000: the report's "99.9 % between 12 and 32".
    #[test]
    fn arity_pmf_sums_to_one_and_gives_the_report_share() {
        let total: f64 = (0..999).map(|a| ln_arity_pmf(1000, 10, a).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let share: f64 = (2..=22).map(|a| ln_arity_pmf(1000, 10, a).exp()).sum();
        assert!(share > 0.999 && share < 0.9999, "share {share}");
    }

    /// The recurrence by hand for n = 1000, k = 10: u = 1, 20, 372.4,
    /// 4290...; the last level takes the remaining 606.6 nodes.
    #[test]
    fn heuristic_follows_the_recurrence() {
        let u = heuristic_levels(1000.0, 10.0);
        assert_eq!(u[0], 1.0);
        assert_eq!(u[1], 20.0);
        let u2 = (1.0 - 21.0 / 1000.0) * 19.0 * 20.0;
        let u3 = (1.0 - (21.0 + u2) / 1000.0) * 19.0 * u2;
        assert!((u[2] - u2).abs() < 1e-9 && (u[3] - u3).abs() < 1e-9);
        let by_hand = (20.0 + 2.0 * u2 + 3.0 * (1000.0 - 21.0 - u2)) / 1000.0;
        assert!((heuristic_distance(1000.0, 10.0, true) - by_hand).abs() < 1e-12);
        // And (4.29) gives the report's 5.0e-4 with 1 min and 3.6 days.
        let unav = unavailability(by_hand, 60.0, 3.6 * 86400.0);
        assert!((unav - 5.0e-4).abs() < 0.05e-4, "{unav}");
    }

    #[test]
    fn moore_bound_by_hand() {
        // Degree 3, 10 nodes: 3 at distance 1, 6 at distance 2 (Petersen).
        assert!((moore_distance(10.0, 3.0) - 15.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn ln_sum_exp_handles_empty_and_infinite() {
        assert_eq!(ln_sum_exp([]), f64::NEG_INFINITY);
        assert_eq!(ln_sum_exp([f64::NEG_INFINITY]), f64::NEG_INFINITY);
        assert!((ln_sum_exp([0.0, 0.0]) - 2f64.ln()).abs() < 1e-15);
        assert!((ln_sum_exp([-1000.0, -1000.0]) - (-1000.0 + 2f64.ln())).abs() < 1e-12);
    }
}
