//! Strict framing of what Sentry reads as PEM and DER: PEM text is one or more blocks with
//! nothing but whitespace around and between them (Go's `pem.Decode` and the `pem` crate skip
//! any text outside a block, so a file or Secret with a stray or spliced-in part would pass
//! unnoticed), and every DER length is in its minimal form (x509-parser accepts lengths in
//! long form where the short one fits, and leading zero bytes, which DER forbids).
//!
//! This module owns only the framing; what the blocks and the DER mean is the caller's.

/// Deepest DER nesting walked; real certificates and CSRs nest fewer than 12 levels.
const MAX_DER_DEPTH: usize = 32;

/// Encodes one PEM block with `\n` line endings (as Go does).
pub fn pem_block(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}

/// Decodes PEM text made only of blocks and whitespace; at least one block.
pub fn pem_blocks(text: &[u8]) -> Result<Vec<pem::Pem>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "invalid PEM: not text".to_owned())?;
    let mut inside: Option<&str> = None;
    let mut begins = 0usize;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        match inside {
            None if line.is_empty() => {}
            None => match line
                .strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
            {
                Some(label) => {
                    inside = Some(label);
                    begins += 1;
                }
                None => {
                    return Err(format!(
                        "invalid PEM: text outside a PEM block on line {} (remove it)",
                        n + 1
                    ))
                }
            },
            Some(label) => {
                if line.starts_with("-----END ") {
                    if line != format!("-----END {label}-----") {
                        return Err(format!("invalid PEM: mismatched END on line {}", n + 1));
                    }
                    inside = None;
                }
            }
        }
    }
    if inside.is_some() {
        return Err("invalid PEM: block without an END line".into());
    }
    if begins == 0 {
        return Err("invalid PEM: no PEM block found".into());
    }
    let blocks = pem::parse_many(text).map_err(|e| format!("invalid PEM: {e}"))?;
    if blocks.len() != begins {
        return Err("invalid PEM: malformed block".into());
    }
    Ok(blocks)
}

/// Decodes PEM text that is exactly one block (whitespace around it allowed).
pub fn pem_single(text: &[u8]) -> Result<pem::Pem, String> {
    let mut blocks = pem_blocks(text)?;
    match blocks.len() {
        1 => Ok(blocks.remove(0)),
        n => Err(format!("invalid PEM: {n} blocks where one is expected")),
    }
}

/// Checks that `der` is one DER element, with every length (nested ones included, except inside
/// primitive strings) definite and minimal.
pub fn check_der(der: &[u8]) -> Result<(), String> {
    let rest = element(der, 0)?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err("trailing data after DER".into())
    }
}

/// Walks one element at the start of `input`; returns what follows it.
fn element(input: &[u8], depth: usize) -> Result<&[u8], String> {
    if depth > MAX_DER_DEPTH {
        return Err("DER nested too deeply".into());
    }
    let (&tag, mut rest) = input.split_first().ok_or("truncated DER")?;
    if tag & 0x1f == 0x1f {
        // High tag number: base-128 continuation bytes.
        loop {
            let (&b, r) = rest.split_first().ok_or("truncated DER tag")?;
            rest = r;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let (&first, r) = rest.split_first().ok_or("truncated DER length")?;
    rest = r;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 {
            return Err("indefinite length in DER".into());
        }
        if count > std::mem::size_of::<usize>() || rest.len() < count {
            return Err("DER length out of range".into());
        }
        let (bytes, r) = rest.split_at(count);
        rest = r;
        if bytes[0] == 0 {
            return Err("non-minimal DER length (leading zero byte)".into());
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if len < 0x80 {
            return Err("non-minimal DER length (long form for a short length)".into());
        }
        len
    };
    if rest.len() < len {
        return Err("truncated DER content".into());
    }
    let (mut content, after) = rest.split_at(len);
    if tag & 0x20 != 0 {
        while !content.is_empty() {
            content = element(content, depth + 1)?;
        }
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "-----BEGIN X-----\nAAEC\n-----END X-----\n";

    #[test]
    fn pem_only_blocks_and_whitespace() {
        assert_eq!(pem_single(BLOCK.as_bytes()).unwrap().contents(), [0, 1, 2]);
        let two = format!("\n{BLOCK}\n  {BLOCK}\n\n");
        assert_eq!(pem_blocks(two.as_bytes()).unwrap().len(), 2);
        assert!(pem_single(two.as_bytes()).unwrap_err().contains("2 blocks"));
        for bad in [
            format!("hello\n{BLOCK}"),
            format!("{BLOCK}trailer\n"),
            format!("{BLOCK}junk{BLOCK}"),
            "-----BEGIN X-----\nAAEC\n".to_owned(),
            "-----BEGIN X-----\nAAEC\n-----END Y-----\n".to_owned(),
            String::new(),
        ] {
            assert!(pem_blocks(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(pem_blocks(b"\xff\xfe").is_err());
    }

    #[test]
    fn der_lengths_must_be_minimal() {
        check_der(&[0x30, 0x03, 0x02, 0x01, 0x05]).unwrap();
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([0u8; 0x80]);
        check_der(&long).unwrap();
        for bad in [
            vec![0x30, 0x81, 0x03, 0x02, 0x01, 0x05],
            vec![0x30, 0x03, 0x02, 0x81, 0x01, 0x05],
            vec![0x30, 0x82, 0x00, 0x03, 0x02, 0x01, 0x05],
            vec![0x30, 0x80, 0x02, 0x01, 0x05, 0x00, 0x00],
            vec![0x30, 0x05, 0x02, 0x01],
            vec![0x30, 0x03, 0x02, 0x01, 0x05, 0x00],
        ] {
            assert!(check_der(&bad).is_err(), "{bad:02x?}");
        }
        let mut deep = vec![0x05, 0x00];
        for _ in 0..40 {
            deep = [vec![0x30, deep.len() as u8], deep].concat();
        }
        assert!(check_der(&deep).unwrap_err().contains("deeply"));
    }
}
