//! Byte sizes on the command line: `4096`, `64K`, `2M`, `2G`, `1T` (powers of 1024).

/// Parses a size with an optional K/M/G/T suffix.
///
/// # Errors
/// A message for an empty, malformed or overflowing value.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (num, suffix) = s.split_at(digits);
    if num.is_empty() {
        return Err(format!("{s:?} is not a size (e.g. 4096, 64M, 2G)"));
    }
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is too large"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn suffixes_and_errors() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("").unwrap_err().contains("not a size"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("2X").unwrap_err().contains("suffix"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
    }
}
