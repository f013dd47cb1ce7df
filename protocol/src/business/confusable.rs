//! Confusable names: the skeleton that two names share when a person could mistake one
//! for the other.
//!
//! A name's skeleton drops what is invisible or decorative (zero-width and format
//! characters, variation selectors, combining marks, check marks, spaces and
//! punctuation), folds case and full-width forms, and maps look-alike letters and digits
//! to one Latin letter (Cyrillic `а` → `a`, Greek `ο` → `o`, `0` → `o`, `1`/`I` → `l`,
//! `rn` → `m`, `vv` → `w`). The relay refuses a display name or handle to an unverified
//! account when its skeleton equals a verified business's display-name skeleton, and any
//! name carrying a check-mark character. The table follows the spirit of Unicode TS #39
//! for the scripts people use to fake Latin brand names; it is not the full table.

/// Characters that imitate a verification badge.
const CHECK_MARKS: &[char] = &[
    '\u{2713}',  // ✓
    '\u{2714}',  // ✔
    '\u{2705}',  // ✅
    '\u{2611}',  // ☑
    '\u{1F5F8}', // 🗸
    '\u{221A}',  // √
    '\u{10003}', // Linear B, looks like a tick in some fonts
];

/// Whether `name` contains a character that imitates the verified badge.
pub fn has_badge_lookalike(name: &str) -> bool {
    name.chars().any(|c| CHECK_MARKS.contains(&c))
}

/// The skeleton of `name`; see the module documentation.
pub fn skeleton(name: &str) -> String {
    let mut folded = String::with_capacity(name.len());
    for c in name.chars() {
        if is_invisible(c) || CHECK_MARKS.contains(&c) || c.is_whitespace() {
            continue;
        }
        let c = fold_width(c);
        if c.is_ascii_punctuation() {
            continue;
        }
        for lower in c.to_lowercase() {
            folded.push(latin_lookalike(lower));
        }
    }
    folded.replace("rn", "m").replace("vv", "w")
}

/// Whether a person could mistake `a` for `b`.
pub fn confusable(a: &str, b: &str) -> bool {
    let a = skeleton(a);
    !a.is_empty() && a == skeleton(b)
}

fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
        | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{E0000}'..='\u{E0FFF}'
        // Combining marks: "ä" and "a" look alike in a small font.
        | '\u{0300}'..='\u{036F}' | '\u{1AB0}'..='\u{1AFF}' | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}' | '\u{FE20}'..='\u{FE2F}')
}

/// Full-width ASCII (U+FF01..U+FF5E) to ASCII.
fn fold_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// Maps a lower-case character to the Latin letter it imitates, if any.
fn latin_lookalike(c: char) -> char {
    match c {
        // Digits and symbols.
        '0' => 'o',
        '1' | '|' | 'ı' | 'ł' => 'l',
        '3' => 'e',
        '5' => 's',
        '@' => 'a',
        '$' => 's',
        // Latin look-alikes.
        'i' => 'l',
        'ß' => 'b',
        'ð' => 'd',
        'à'..='å' | 'ā' | 'ă' | 'ą' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'è'..='ë' | 'ē' | 'ė' | 'ę' | 'ě' => 'e',
        'ì'..='ï' | 'ī' | 'į' => 'l',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò'..='ö' | 'ō' | 'ő' => 'o',
        'ù'..='ü' | 'ū' | 'ů' | 'ű' => 'u',
        'ý' | 'ÿ' => 'y',
        'ø' => 'o',
        // Cyrillic.
        'а' => 'a',
        'в' | 'ь' => 'b',
        'с' => 'c',
        'ԁ' => 'd',
        'е' | 'ё' => 'e',
        'һ' => 'h',
        'і' | 'ї' | 'ӏ' => 'l',
        'ј' => 'j',
        'к' => 'k',
        'м' => 'm',
        'н' => 'h',
        'о' => 'o',
        'р' => 'p',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' => 's',
        'т' => 't',
        'и' | 'ц' => 'u',
        'ѵ' => 'v',
        'ԝ' | 'ш' => 'w',
        'х' => 'x',
        'у' => 'y',
        // Greek.
        'α' => 'a',
        'β' => 'b',
        'ε' => 'e',
        'η' => 'n',
        'ι' => 'l',
        'κ' => 'k',
        'μ' => 'u',
        'ν' => 'v',
        'ο' => 'o',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'χ' => 'x',
        'γ' => 'y',
        'ω' => 'w',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_share_a_skeleton() {
        let brand = "Acme Bank";
        for fake in [
            "acme bank",
            "ACME-BANK",
            "Acme\u{200B}Bank",
            "Acme Bank \u{2713}",
            "\u{0410}cme B\u{0430}nk", // Cyrillic А and а
            "Acme Bαnk",               // Greek alpha
            "Ａｃｍｅ Ｂａｎｋ",       // full width
            "Acrne Bank",              // rn for m
            "acme_bank",
            "Acme Ba\u{0308}nk", // combining diaeresis
            "Acmé Bänk",         // precomposed accents
        ] {
            assert!(confusable(fake, brand), "{fake:?} should be confusable");
        }
        assert!(confusable("PayPal", "PayPaI"));
        assert!(confusable("g00gle", "google"));
    }

    #[test]
    fn different_names_are_not_confusable() {
        assert!(!confusable("Acme Bank", "Acme Travel"));
        assert!(!confusable("alice", "bob"));
        assert!(
            !confusable("\u{200B}", "\u{200D}"),
            "empty skeletons never match"
        );
    }

    #[test]
    fn check_marks_are_badge_lookalikes() {
        assert!(has_badge_lookalike("Acme ✔"));
        assert!(!has_badge_lookalike("Acme"));
    }
}
