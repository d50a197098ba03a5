//! A small A4 PDF writer for the reports: headings, wrapped paragraphs,
//! tables and [`Drawing`]s (the same charts the HTML pages show as SVG),
//! flowed over pages with page numbers. Standard-14 fonts (Helvetica and
//! Helvetica-Bold, WinAnsi encoding), so nothing is embedded and no
//! external program runs. Pure: no I/O, no clock (the creation time is an
//! argument).
//!
//! Coordinates given to this module are in points with the origin at the
//! top left and y downwards, as in [`Drawing`]; the one place that flips
//! them to PDF's bottom-left origin is [`Page::y`].

use crate::charts::{Anchor, Drawing, Prim, Rgb};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

/// A4 width, pt.
pub const A4_W: f64 = 595.28;
/// A4 height, pt.
pub const A4_H: f64 = 841.89;
const MARGIN: f64 = 50.0;
const FOOTER: f64 = 30.0;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// Helvetica advance widths (1/1000 em) of ASCII 32..=126, from the
/// Adobe Core 14 AFM files.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667,
    611, 778, 722, 278, 500, 667, 556, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500,
    222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
];
/// Helvetica-Bold advance widths of ASCII 32..=126.
const HELVETICA_BOLD: [u16; 95] = [
    278, 333, 474, 556, 556, 889, 722, 238, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556,
    556, 556, 556, 556, 556, 556, 556, 333, 333, 584, 584, 584, 611, 975, 722, 722, 722, 722, 667,
    611, 778, 722, 278, 556, 722, 611, 833, 722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667,
    667, 611, 333, 278, 333, 584, 556, 333, 556, 611, 556, 611, 556, 333, 611, 611, 278, 278, 556,
    278, 889, 611, 611, 611, 611, 389, 556, 333, 611, 556, 778, 556, 556, 500, 389, 280, 389, 584,
];

/// Encodes text in WinAnsi (Windows-1252), the encoding of the standard
/// fonts. Characters outside it are replaced by readable ASCII (`₂` → `2`,
/// `≥` → `>=`, `−` → `-`), or `?` when there is no sensible stand-in.
pub fn winansi(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        let code = c as u32;
        match c {
            ' '..='~' => out.push(code as u8),
            '\u{a0}'..='\u{ff}' => out.push(code as u8),
            '€' => out.push(0x80),
            '‚' => out.push(0x82),
            '„' => out.push(0x84),
            '…' => out.push(0x85),
            '†' => out.push(0x86),
            '‡' => out.push(0x87),
            '‰' => out.push(0x89),
            '‘' => out.push(0x91),
            '’' => out.push(0x92),
            '“' => out.push(0x93),
            '”' => out.push(0x94),
            '•' => out.push(0x95),
            '–' => out.push(0x96),
            '—' => out.push(0x97),
            '™' => out.push(0x99),
            'ƒ' => out.push(0x83),
            'ˆ' => out.push(0x88),
            'Š' => out.push(0x8a),
            '‹' => out.push(0x8b),
            'Œ' => out.push(0x8c),
            'Ž' => out.push(0x8e),
            '˜' => out.push(0x98),
            'š' => out.push(0x9a),
            '›' => out.push(0x9b),
            'œ' => out.push(0x9c),
            'ž' => out.push(0x9e),
            'Ÿ' => out.push(0x9f),
            // A combining accent after its letter (decomposed text): the
            // letter alone reads better than a `?`.
            '\u{300}'..='\u{36f}' => {}
            '\t' | '\n' | '\r' => out.push(b' '),
            '₀'..='₉' => out.push(b'0' + (code - '₀' as u32) as u8),
            '⁰' => out.push(b'0'),
            '⁴'..='⁹' => out.push(b'0' + (code - '⁰' as u32) as u8),
            '≥' => out.extend_from_slice(b">="),
            '≤' => out.extend_from_slice(b"<="),
            '≠' => out.extend_from_slice(b"!="),
            '≈' => out.push(b'~'),
            '−' | '‐' | '‑' => out.push(b'-'),
            '→' => out.extend_from_slice(b"->"),
            '←' => out.extend_from_slice(b"<-"),
            '∑' => out.extend_from_slice(b"sum"),
            'η' => out.extend_from_slice(b"eta"),
            'Δ' => out.extend_from_slice(b"delta"),
            _ => out.push(b'?'),
        }
    }
    out
}

/// Width of WinAnsi-encoded text at `size` pt.
pub fn text_width(encoded: &[u8], size: f64, bold: bool) -> f64 {
    let table = if bold { &HELVETICA_BOLD } else { &HELVETICA };
    let units: u32 = encoded
        .iter()
        .map(|&b| match b {
            32..=126 => u32::from(table[usize::from(b - 32)]),
            0xb0 => 400,        // degree
            0x95 | 0xb7 => 350, // bullets
            0x96 => 556,        // en dash
            0x97 => 1000,       // em dash
            0xd7 => 584,        // multiplication
            0x91 | 0x92 => 222, // quotes
            _ => 556,
        })
        .sum();
    f64::from(units) * size / 1000.0
}

fn width(s: &str, size: f64, bold: bool) -> f64 {
    text_width(&winansi(s), size, bold)
}

/// `s` cut to at most `max` pt wide at `size` (regular), with an ellipsis
/// when cut.
pub fn fit(s: &str, size: f64, max: f64) -> String {
    if width(s, size, false) <= max {
        return s.to_owned();
    }
    let mut out: String = String::new();
    for c in s.chars() {
        let mut next = out.clone();
        next.push(c);
        next.push('…');
        if width(&next, size, false) > max {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

/// Splits `s` into lines no wider than `max` pt (a word longer than a
/// line is cut).
pub fn wrap(s: &str, size: f64, bold: bool, max: f64) -> Vec<String> {
    let mut lines = Vec::new();
    for para in s.split('\n') {
        let mut line = String::new();
        for word in para.split(' ').filter(|w| !w.is_empty()) {
            let candidate = if line.is_empty() {
                word.to_owned()
            } else {
                format!("{line} {word}")
            };
            if width(&candidate, size, bold) <= max {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            // A word wider than the line: cut it.
            let mut w = String::new();
            for c in word.chars() {
                w.push(c);
                if width(&w, size, bold) > max && w.chars().count() > 1 {
                    w.pop();
                    lines.push(std::mem::take(&mut w));
                    w.push(c);
                }
            }
            line = w;
        }
        lines.push(line);
    }
    lines
}

/// `12.5`, `-3`, `99.0 %`: a number, perhaps with a percent sign.
fn is_number(s: &str) -> bool {
    let t = s.trim_end_matches(" %").trim_start_matches('-');
    !t.is_empty() && t.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn rgb(c: Rgb) -> (f32, f32, f32) {
    (
        f32::from(c.0) / 255.0,
        f32::from(c.1) / 255.0,
        f32::from(c.2) / 255.0,
    )
}

/// One page's content being written.
struct Page {
    content: Content,
}

impl Page {
    /// The one y flip: top-down points to PDF's bottom-up user space.
    fn y(y: f64) -> f32 {
        (A4_H - y) as f32
    }

    fn text(&mut self, x: f64, baseline: f64, s: &str, size: f64, bold: bool, color: Rgb) {
        let (r, g, b) = rgb(color);
        self.content
            .set_fill_rgb(r, g, b)
            .begin_text()
            .set_font(if bold { BOLD } else { REGULAR }, size as f32)
            .set_text_matrix([1.0, 0.0, 0.0, 1.0, x as f32, Self::y(baseline)])
            .show(Str(&winansi(s)))
            .end_text();
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, color: Rgb) {
        let (r, g, b) = rgb(color);
        self.content
            .set_fill_rgb(r, g, b)
            .rect(x as f32, Self::y(y + h), w as f32, h as f32)
            .fill_nonzero();
    }

    fn line(&mut self, from: (f64, f64), to: (f64, f64), color: Rgb, width: f64, dashed: bool) {
        let (r, g, b) = rgb(color);
        self.content
            .set_stroke_rgb(r, g, b)
            .set_line_width(width as f32);
        if dashed {
            self.content.set_dash_pattern([4.0, 3.0], 0.0);
        }
        self.content
            .move_to(from.0 as f32, Self::y(from.1))
            .line_to(to.0 as f32, Self::y(to.1))
            .stroke();
        if dashed {
            self.content.set_dash_pattern([], 0.0);
        }
    }

    /// Paints `d` with its top-left corner at (`x0`, `y0`), scaled.
    fn drawing(&mut self, d: &Drawing, x0: f64, y0: f64, scale: f64) {
        let at = |p: (f64, f64)| (x0 + p.0 * scale, y0 + p.1 * scale);
        for p in &d.prims {
            match p {
                Prim::Line {
                    from,
                    to,
                    color,
                    width,
                    dashed,
                } => self.line(at(*from), at(*to), *color, width * scale, *dashed),
                Prim::Rect { x, y, w, h, color } => {
                    let (x, y) = at((*x, *y));
                    self.rect(x, y, w * scale, h * scale, *color);
                }
                Prim::Polyline {
                    points,
                    color,
                    width,
                } => {
                    let Some((first, rest)) = points.split_first() else {
                        continue;
                    };
                    let (r, g, b) = rgb(*color);
                    let f = at(*first);
                    self.content
                        .set_stroke_rgb(r, g, b)
                        .set_line_width((width * scale) as f32)
                        .move_to(f.0 as f32, Self::y(f.1));
                    for q in rest {
                        let q = at(*q);
                        self.content.line_to(q.0 as f32, Self::y(q.1));
                    }
                    self.content.stroke();
                }
                Prim::Text {
                    x,
                    y,
                    text,
                    size,
                    anchor,
                    color,
                    bold,
                } => {
                    let size = size * scale;
                    let w = width(text, size, *bold);
                    let (x, y) = at((*x, *y));
                    let x = match anchor {
                        Anchor::Start => x,
                        Anchor::Middle => x - w / 2.0,
                        Anchor::End => x - w,
                    };
                    self.text(x, y, text, size, *bold, *color);
                }
            }
        }
    }
}

/// Text colour of the body.
const INK: Rgb = Rgb(30, 30, 30);
/// Secondary text.
const GREY: Rgb = Rgb(90, 90, 90);
/// Table header background.
const HEAD_BG: Rgb = Rgb(230, 233, 238);
/// Table rules.
const RULE: Rgb = Rgb(190, 190, 190);

/// A document being flowed onto A4 pages.
pub struct PdfBuilder {
    title: String,
    pages: Vec<Page>,
    /// Top-down position of the next block on the last page.
    y: f64,
}

impl PdfBuilder {
    /// An empty document; `title` goes into the metadata and every footer.
    pub fn new(title: &str) -> Self {
        let mut b = Self {
            title: title.to_owned(),
            pages: Vec::new(),
            y: 0.0,
        };
        b.new_page();
        b
    }

    fn content_width() -> f64 {
        A4_W - 2.0 * MARGIN
    }

    fn bottom() -> f64 {
        A4_H - MARGIN - FOOTER
    }

    /// Starts a new page.
    pub fn new_page(&mut self) {
        self.pages.push(Page {
            content: Content::new(),
        });
        self.y = MARGIN;
    }

    /// Number of pages so far.
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Starts a new page unless `h` pt still fit on this one.
    pub fn keep(&mut self, h: f64) {
        self.ensure(h);
    }

    fn ensure(&mut self, h: f64) {
        if self.y + h > Self::bottom() && self.y > MARGIN {
            self.new_page();
        }
    }

    fn page(&mut self) -> &mut Page {
        if self.pages.is_empty() {
            self.new_page();
        }
        let last = self.pages.len() - 1;
        &mut self.pages[last]
    }

    /// Vertical space, pt.
    pub fn space(&mut self, h: f64) {
        self.y += h;
    }

    /// A heading: level 1 (large), 2 or 3. Kept with the next 80 pt.
    pub fn heading(&mut self, level: u8, text: &str) {
        let size = match level {
            1 => 20.0,
            2 => 14.0,
            _ => 11.5,
        };
        self.y += size * 0.6;
        self.ensure(size * 1.4 + 80.0);
        let lines = wrap(text, size, true, Self::content_width());
        for l in lines {
            self.y += size;
            let y = self.y;
            self.page().text(MARGIN, y, &l, size, true, INK);
            self.y += size * 0.3;
        }
        self.y += size * 0.3;
    }

    /// A wrapped paragraph.
    pub fn paragraph(&mut self, text: &str, size: f64, color_grey: bool) {
        let lead = size * 1.35;
        for l in wrap(text, size, false, Self::content_width()) {
            self.ensure(lead);
            self.y += lead;
            let y = self.y - size * 0.3;
            let color = if color_grey { GREY } else { INK };
            self.page().text(MARGIN, y, &l, size, false, color);
        }
        self.y += size * 0.5;
    }

    /// A table with a bold header row, repeated on each page it spans.
    /// Column widths follow the content, cells wrap.
    pub fn table(&mut self, caption: &str, header: &[String], rows: &[Vec<String>]) {
        const SIZE: f64 = 8.0;
        const PAD: f64 = 3.0;
        let lead = SIZE * 1.25;
        let avail = Self::content_width();
        let cols = header.len().max(1);
        // Natural widths (longest word as a floor, whole text as wish).
        let mut want = vec![0.0f64; cols];
        let mut floor = vec![0.0f64; cols];
        for (ri, r) in std::iter::once(header)
            .chain(rows.iter().map(Vec::as_slice))
            .enumerate()
        {
            for (i, c) in r.iter().take(cols).enumerate() {
                let bold = ri == 0;
                want[i] = want[i].max(width(c, SIZE, bold) + 2.0 * PAD);
                let longest = c
                    .split(' ')
                    .map(|w| width(w, SIZE, bold))
                    .fold(0.0, f64::max);
                floor[i] = floor[i].max((longest + 2.0 * PAD).min(avail / cols as f64));
            }
        }
        let total: f64 = want.iter().sum();
        let widths: Vec<f64> = if total <= avail {
            want.clone()
        } else {
            // Give every column its floor, share the rest by wish.
            let fsum: f64 = floor.iter().sum();
            let extra = (avail - fsum).max(0.0);
            let wsum: f64 = want.iter().zip(&floor).map(|(w, f)| w - f).sum();
            want.iter()
                .zip(&floor)
                .map(|(w, f)| {
                    f + if wsum > 0.0 {
                        extra * (w - f) / wsum
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        if !caption.is_empty() {
            self.ensure(lead * 4.0);
            self.y += SIZE + 4.0;
            let y = self.y;
            self.page().text(MARGIN, y, caption, SIZE + 1.0, true, INK);
            self.y += 4.0;
        }
        let wrapped = |r: &[String], bold: bool| -> Vec<Vec<String>> {
            (0..cols)
                .map(|i| {
                    let c = r.get(i).map_or("", String::as_str);
                    wrap(c, SIZE, bold, widths[i] - 2.0 * PAD)
                })
                .collect()
        };
        let head = wrapped(header, true);
        let row_h = |cells: &Vec<Vec<String>>| {
            cells.iter().map(Vec::len).max().unwrap_or(1) as f64 * lead + 2.0 * PAD
        };
        let draw_row = |b: &mut Self, cells: &Vec<Vec<String>>, bold: bool| {
            let h = row_h(cells);
            let top = b.y;
            if bold {
                b.page().rect(MARGIN, top, widths.iter().sum(), h, HEAD_BG);
            }
            let mut x = MARGIN;
            for (i, lines) in cells.iter().enumerate() {
                // Numbers (not in the first column) are right-aligned.
                let right = !bold && i > 0 && lines.len() == 1 && is_number(&lines[0]);
                for (li, l) in lines.iter().enumerate() {
                    let base = top + PAD + lead * (li as f64 + 1.0) - SIZE * 0.25;
                    let lx = if right {
                        x + widths[i] - PAD - width(l, SIZE, bold)
                    } else {
                        x + PAD
                    };
                    b.page().text(lx, base, l, SIZE, bold, INK);
                }
                x += widths[i];
            }
            let right = MARGIN + widths.iter().sum::<f64>();
            b.page()
                .line((MARGIN, top + h), (right, top + h), RULE, 0.5, false);
            b.y += h;
        };
        self.ensure(row_h(&head) + lead * 2.0 + 2.0 * PAD);
        draw_row(self, &head, true);
        for r in rows {
            let cells = wrapped(r, false);
            let h = row_h(&cells);
            if self.y + h > Self::bottom() {
                self.new_page();
                draw_row(self, &head, true);
            }
            draw_row(self, &cells, false);
        }
        self.y += 8.0;
    }

    /// A chart, scaled to the text width if wider, on one page.
    pub fn drawing(&mut self, d: &Drawing) {
        let scale = (Self::content_width() / d.width).min(1.0);
        let h = d.height * scale;
        self.ensure(h + 6.0);
        let y = self.y;
        self.page().drawing(d, MARGIN, y, scale);
        self.y += h + 6.0;
    }

    /// The finished file: footers with page numbers, metadata (title,
    /// producer, creation time `now_ms`).
    pub fn finish(mut self, now_ms: i64) -> Vec<u8> {
        let n = self.pages.len();
        // The footer's title is cut (with an ellipsis) so a long site name
        // never runs into the page number.
        let room = A4_W - 2.0 * MARGIN - width("Page 9999 of 9999", 8.0, false) - 12.0;
        let title = fit(&self.title, 8.0, room);
        for (i, p) in self.pages.iter_mut().enumerate() {
            let label = format!("Page {} of {n}", i + 1);
            let w = width(&label, 8.0, false);
            p.line(
                (MARGIN, A4_H - MARGIN + 2.0),
                (A4_W - MARGIN, A4_H - MARGIN + 2.0),
                RULE,
                0.5,
                false,
            );
            p.text(MARGIN, A4_H - MARGIN + 14.0, &title, 8.0, false, GREY);
            p.text(
                A4_W - MARGIN - w,
                A4_H - MARGIN + 14.0,
                &label,
                8.0,
                false,
                GREY,
            );
        }
        let mut pdf = Pdf::new();
        let mut next = 1;
        let mut alloc = || {
            let r = Ref::new(next);
            next += 1;
            r
        };
        let (catalog, tree, regular, bold, info) = (alloc(), alloc(), alloc(), alloc(), alloc());
        let ids: Vec<(Ref, Ref)> = (0..n).map(|_| (alloc(), alloc())).collect();
        pdf.catalog(catalog).pages(tree);
        pdf.pages(tree)
            .kids(ids.iter().map(|x| x.0))
            .count(i32::try_from(n).unwrap_or(i32::MAX));
        for (id, name) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
            pdf.type1_font(id)
                .base_font(Name(name.as_bytes()))
                .encoding_predefined(Name(b"WinAnsiEncoding"));
        }
        for (p, (page_id, content_id)) in self.pages.into_iter().zip(&ids) {
            let mut page = pdf.page(*page_id);
            page.media_box(Rect::new(0.0, 0.0, A4_W as f32, A4_H as f32))
                .parent(tree)
                .contents(*content_id);
            page.resources()
                .fonts()
                .pair(REGULAR, regular)
                .pair(BOLD, bold);
            page.finish();
            pdf.stream(*content_id, &p.content.finish());
        }
        let d = crate::export::date::Date::from_ms(now_ms);
        let secs = now_ms.rem_euclid(86_400_000) / 1000;
        let date = pdf_writer::Date::new(u16::try_from(d.y).unwrap_or(0))
            .month(d.m as u8)
            .day(d.d as u8)
            .hour((secs / 3600) as u8)
            .minute((secs / 60 % 60) as u8)
            .second((secs % 60) as u8)
            .utc_offset_hour(0);
        pdf.document_info(info)
            .title(TextStr(&title))
            .producer(TextStr(concat!(
                "vigie-collector ",
                env!("CARGO_PKG_VERSION")
            )))
            .creation_date(date);
        pdf.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::charts::Drawing;

    #[test]
    fn winansi_keeps_latin1_and_replaces_the_rest_sensibly() {
        assert_eq!(winansi("PUE ≥ 1.2"), b"PUE >= 1.2");
        assert_eq!(winansi("t CO₂e"), b"t CO2e");
        assert_eq!(winansi("25 °C"), b"25 \xb0C");
        assert_eq!(winansi("E_IT × 1.3 − 2"), b"E_IT \xd7 1.3 - 2");
        assert_eq!(winansi("a – b — c €"), b"a \x96 b \x97 c \x80");
        assert_eq!(winansi("m² é"), b"m\xb2 \xe9");
        assert_eq!(winansi("日"), b"?");
    }

    #[test]
    fn widths_follow_the_font_metrics() {
        // "i" is narrow, "W" wide; 10 pt of "0" is 5.56 pt.
        assert!((text_width(b"0", 10.0, false) - 5.56).abs() < 1e-9);
        assert!(text_width(b"W", 10.0, false) > 3.0 * text_width(b"i", 10.0, false));
        assert!(text_width(b"abc", 10.0, true) > text_width(b"abc", 10.0, false));
    }

    #[test]
    fn wrapping_respects_the_width_and_keeps_every_word() {
        let s = "the quick brown fox jumps over the lazy dog ".repeat(10);
        let lines = wrap(&s, 10.0, false, 120.0);
        assert!(lines.len() > 5);
        for l in &lines {
            assert!(width(l, 10.0, false) <= 120.0, "{l}");
        }
        assert_eq!(
            lines.join(" ").split(' ').count(),
            s.split_whitespace().count()
        );
        // A word longer than the line is cut, not lost.
        let cut = wrap(&"x".repeat(100), 10.0, false, 50.0);
        assert_eq!(cut.concat().len(), 100);
    }

    fn content_text(f: impl FnOnce(&mut Page)) -> String {
        let mut p = Page {
            content: Content::new(),
        };
        f(&mut p);
        String::from_utf8_lossy(&p.content.finish()).into_owned()
    }

    #[test]
    fn drawings_are_flipped_to_pdf_coordinates() {
        let d = Drawing {
            width: 100.0,
            height: 50.0,
            title: "t".into(),
            prims: vec![
                Prim::Rect {
                    x: 10.0,
                    y: 20.0,
                    w: 5.0,
                    h: 10.0,
                    color: Rgb(255, 0, 0),
                },
                Prim::Line {
                    from: (0.0, 0.0),
                    to: (100.0, 50.0),
                    color: Rgb(0, 0, 0),
                    width: 1.0,
                    dashed: true,
                },
            ],
        };
        let s = content_text(|p| p.drawing(&d, 50.0, 100.0, 1.0));
        // The rectangle's top is 120 pt from the top: its bottom-left
        // corner in PDF space is at y = 841.89 - 130.
        let bottom = A4_H - 130.0;
        assert!(s.contains(&format!("60 {} 5 10 re", bottom as f32)), "{s}");
        // The line from the top-left (50, 100) goes down to (150, 150).
        assert!(
            s.contains(&format!("50 {} m", (A4_H - 100.0) as f32)),
            "{s}"
        );
        assert!(
            s.contains(&format!("150 {} l", (A4_H - 150.0) as f32)),
            "{s}"
        );
        // A dashed line sets and then resets its dash pattern.
        assert!(s.contains("[4 3] 0 d") && s.contains("[] 0 d"), "{s}");
    }

    #[test]
    fn a_chart_paints_the_same_shapes_as_its_svg() {
        use crate::charts::{Chart, Kind, SeriesData};
        let d = Chart {
            title: "t".into(),
            unit: "MWh".into(),
            labels: vec!["a".into(), "b".into(), "c".into()],
            series: vec![SeriesData {
                name: "s".into(),
                values: vec![Some(1.0), Some(2.0), None],
            }],
            kind: Kind::Bars,
            targets: vec![("limit".into(), 1.5)],
            from_zero: true,
        }
        .draw();
        let svg = d.to_svg();
        let pdf = content_text(|p| p.drawing(&d, 0.0, 0.0, 1.0));
        assert_eq!(pdf.matches(" re\n").count(), svg.matches("<rect").count());
        assert_eq!(pdf.matches("Tj").count(), svg.matches("<text").count());
        assert_eq!(
            pdf.matches("\nS\n").count(),
            svg.matches("<line").count() + svg.matches("<polyline").count()
        );
    }

    #[test]
    fn numbers_are_told_from_words() {
        assert!(is_number("1.526") && is_number("-3") && is_number("99.0 %"));
        assert!(
            !is_number("n/a")
                && !is_number("2025-01")
                && !is_number("")
                && !is_number("1.5 (estimated)")
        );
    }

    #[test]
    fn text_is_escaped_in_pdf_strings() {
        // Balanced parentheses are legal in a literal string; unbalanced
        // ones and backslashes must be escaped.
        let s = content_text(|p| p.text(0.0, 10.0, r"a (b) \ c", 10.0, false, INK));
        assert!(s.contains(r"(a (b) \\ c) Tj"), "{s}");
        let s = content_text(|p| p.text(0.0, 10.0, "x) y (z", 10.0, false, INK));
        assert!(s.contains(r"(x\) y \(z) Tj"), "{s}");
    }

    #[test]
    fn long_documents_flow_over_numbered_pages() {
        let mut b = PdfBuilder::new("Test (dossier)");
        b.heading(1, "Title");
        for i in 0..200 {
            b.paragraph(&format!("paragraph {i} with some words in it"), 10.0, false);
        }
        let rows: Vec<Vec<String>> = (0..100)
            .map(|i| vec![format!("row {i}"), "value".into()])
            .collect();
        b.table("A table", &["Name".into(), "Value".into()], &rows);
        let n = b.page_count();
        assert!(n >= 4, "{n}");
        let pdf = b.finish(1_767_225_600_000);
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.starts_with("%PDF-"));
        assert!(text.contains(&format!("/Count {n}")));
        assert!(text.contains(&format!("(Page {n} of {n}) Tj")));
        assert!(text.contains("/BaseFont /Helvetica-Bold"));
        assert!(text.contains("/Encoding /WinAnsiEncoding"));
        assert!(text.trim_end().ends_with("%%EOF"));
    }
    #[test]
    fn every_windows_1252_letter_is_kept() {
        assert_eq!(
            winansi("Cœur Š ž Ÿ ƒ ‹›"),
            b"C\x9cur \x8a \x9e \x9f \x83 \x8b\x9b".to_vec()
        );
        // Decomposed "é": the letter stays, the combining accent goes.
        assert_eq!(winansi("e\u{301}t\u{e9}"), b"et\xe9".to_vec());
    }
    #[test]
    fn a_long_title_is_cut_to_fit() {
        let long = "Permit dossier: ".to_owned() + &"Very Long Site Name ".repeat(20);
        let f = fit(&long, 8.0, 200.0);
        assert!(f.ends_with('…') && width(&f, 8.0, false) <= 200.0, "{f}");
        assert_eq!(fit("short", 8.0, 200.0), "short");
    }
}
