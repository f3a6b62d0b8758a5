//! IDL comments made safe for rustdoc before any code is generated from them.
//!
//! Comments become doc comments on messages, fields, services and methods. Written for
//! protobuf readers, they may hold things rustdoc treats specially: a fenced or indented
//! code block would become a doctest that fails to compile, and `Vec<u8>` or `<name>`
//! would read as an unclosed HTML tag. Every comment in the descriptor set is rewritten
//! once, here, so prost-build's message docs and svrkit's service docs agree:
//!
//! - fenced blocks (```` ``` ```` or `~~~`) keep their text, but their info string
//!   (`rust`, `should_panic`, ...) is replaced by `text`, so they render as code and are
//!   never compiled;
//! - indented code blocks become fenced `text` blocks;
//! - `<` and `>` outside code spans are escaped (`\<`, `\>`); an autolink
//!   `<https://…>` loses its brackets, since prost-build puts them around every URL.
//!
//! Square brackets and bare URLs are left to prost-build, which escapes them itself.

use prost_types::FileDescriptorSet;

/// Rewrites every comment in `fds` (leading, trailing and detached) for rustdoc.
pub(crate) fn sanitize(fds: &mut FileDescriptorSet) {
    for file in &mut fds.file {
        let Some(info) = file.source_code_info.as_mut() else {
            continue;
        };
        for location in &mut info.location {
            if let Some(text) = location.leading_comments.as_mut() {
                *text = sanitize_comment(text);
            }
            if let Some(text) = location.trailing_comments.as_mut() {
                *text = sanitize_comment(text);
            }
            for text in &mut location.leading_detached_comments {
                *text = sanitize_comment(text);
            }
        }
    }
}

/// The width of a line's leading run of spaces (a tab counts as four).
fn indent(line: &str) -> usize {
    line.chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

/// The fence a line opens or closes (```` ``` ```` or `~~~`, three or more), if any.
fn fence(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = trimmed.chars().take_while(|c| *c == marker).count();
    (len >= 3).then(|| &trimmed[..len])
}

/// One comment, rewritten line by line.
pub(crate) fn sanitize_comment(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    // rustdoc strips the indentation every non-blank line shares; so do we.
    let common = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent(l))
        .min()
        .unwrap_or(0);
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 4);
    let mut open_fence: Option<String> = None;
    let mut in_indented = false;
    let mut previous_blank = true;
    for line in lines {
        let blank = line.trim().is_empty();
        if let Some(open) = &open_fence {
            if fence(line).is_some_and(|f| f.starts_with(open.as_str())) {
                open_fence = None;
            }
            out.push(line.to_string());
            previous_blank = blank;
            continue;
        }
        if in_indented {
            if blank || indent(line) >= common + 4 {
                out.push(line.to_string());
                previous_blank = blank;
                continue;
            }
            close_indented(&mut out);
            in_indented = false;
        }
        if let Some(f) = fence(line) {
            // The info string goes: rustdoc reads words like `rust` or `should_panic` in
            // it as attributes, and any of them would make the block a doctest again.
            let prefix = &line[..line.len() - line.trim_start().len()];
            out.push(format!("{prefix}{f}text"));
            open_fence = Some(f.to_string());
            previous_blank = false;
            continue;
        }
        if !blank && previous_blank && indent(line) >= common + 4 {
            out.push(format!("{}```text", " ".repeat(common)));
            out.push(line.to_string());
            in_indented = true;
            previous_blank = false;
            continue;
        }
        out.push(escape_angles(line));
        previous_blank = blank;
    }
    if in_indented {
        close_indented(&mut out);
    }
    if let Some(open) = open_fence {
        // An unclosed fence would swallow the rest of the item's docs: close it.
        out.push(open);
    }
    let mut joined = out.join("\n");
    if text.ends_with('\n') {
        joined.push('\n');
    }
    joined
}

/// Ends an indented block turned fenced, keeping trailing blank lines after the fence.
fn close_indented(out: &mut Vec<String>) {
    let mut blanks = 0;
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
        blanks += 1;
    }
    let prefix = out
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with("```text"))
        .map(|l| l[..l.len() - l.trim_start().len()].to_string())
        .unwrap_or_default();
    out.push(format!("{prefix}```"));
    out.extend(std::iter::repeat_n(String::new(), blanks));
}

/// Escapes `<` and `>` outside code spans and autolinks.
fn escape_angles(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    let mut rest = line;
    while let Some(i) = rest.find(['`', '<', '>']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        rest = &rest[i..];
        match c {
            b'`' => {
                // A code span: the same number of backticks closes it.
                let ticks = rest.bytes().take_while(|b| *b == b'`').count();
                let delimiter = &rest[..ticks];
                match rest[ticks..].find(delimiter) {
                    Some(end) => {
                        let span_end = ticks + end + ticks;
                        out.push_str(&rest[..span_end]);
                        rest = &rest[span_end..];
                    }
                    None => {
                        out.push_str(delimiter);
                        rest = &rest[ticks..];
                    }
                }
            }
            b'<' => {
                let autolink = (rest.starts_with("<http://") || rest.starts_with("<https://"))
                    && rest
                        .find('>')
                        .is_some_and(|end| !rest[..end].contains(char::is_whitespace));
                match (autolink, rest.find('>')) {
                    (true, Some(end)) => {
                        // prost-build turns every bare URL into an autolink itself.
                        out.push_str(&rest[1..end]);
                        rest = &rest[end + 1..];
                    }
                    _ => {
                        out.push_str("\\<");
                        rest = &rest[1..];
                    }
                }
            }
            _ => {
                out.push_str("\\>");
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenced_blocks_are_marked_text() {
        let text = " Example:\n ```\n let x = 1;\n ```\n Done.\n";
        assert_eq!(
            sanitize_comment(text),
            " Example:\n ```text\n let x = 1;\n ```\n Done.\n"
        );
        let text = " ```rust,should_panic\n fn f() {}\n ```";
        assert_eq!(sanitize_comment(text), " ```text\n fn f() {}\n ```");
    }

    #[test]
    fn indented_code_becomes_fenced() {
        let text = " Call it so:\n\n     client.call(x);\n     more();\n\n After.";
        assert_eq!(
            sanitize_comment(text),
            " Call it so:\n\n ```text\n     client.call(x);\n     more();\n ```\n\n After."
        );
    }

    #[test]
    fn unclosed_fences_are_closed() {
        assert_eq!(sanitize_comment(" ```\n code"), " ```text\n code\n```");
    }

    #[test]
    fn angle_brackets_are_escaped_outside_code() {
        assert_eq!(
            sanitize_comment(" Takes a Vec<u8> and `Option<T>` or <name>; see <https://a.b/c>."),
            " Takes a Vec\\<u8\\> and `Option<T>` or \\<name\\>; see https://a.b/c."
        );
        assert_eq!(sanitize_comment(" a ` b < c"), " a ` b \\< c");
        assert_eq!(sanitize_comment(" ``a ` <b>`` x>y"), " ``a ` <b>`` x\\>y");
    }

    #[test]
    fn plain_text_is_unchanged() {
        let text = " Says \"hello\" to 'you'.\n - a list\n   continued\n";
        assert_eq!(sanitize_comment(text), text);
    }
}
