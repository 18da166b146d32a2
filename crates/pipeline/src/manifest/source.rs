//! Turning byte spans of the manifest text into line/column locations.
use std::ops::Range;

use crate::error::Location;

/// The location of a byte span in `text`: 1-based line and column (in characters),
/// the line's text, and how much of the line to underline.
pub(crate) fn locate(text: &str, span: Range<usize>) -> Location {
    let start = floor_char_boundary(text, span.start.min(text.len()));
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_text = text[line_start..line_end].trim_end_matches('\r');
    let end = floor_char_boundary(text, span.end.clamp(start, line_end));
    Location {
        line: text[..line_start].matches('\n').count() + 1,
        column: text[line_start..start].chars().count() + 1,
        line_text: line_text.to_string(),
        width: text[start..end].chars().count().max(1),
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_column_and_width() {
        let text = "a = 1\nbé = 'x'\n";
        let start = text.find("'x'").unwrap();
        let loc = locate(text, start..start + 3);
        assert_eq!((loc.line, loc.column, loc.width), (2, 6, 3));
        assert_eq!(loc.line_text, "bé = 'x'");
    }

    #[test]
    fn span_past_the_end_is_clamped() {
        let loc = locate("a = 1", 10..20);
        assert_eq!((loc.line, loc.column, loc.width), (1, 6, 1));
    }

    #[test]
    fn multi_line_span_underlines_first_line_only() {
        let text = "[[stage]]\nname = 'a'\n";
        let loc = locate(text, 0..text.len());
        assert_eq!((loc.line, loc.column, loc.width), (1, 1, 9));
    }
}
