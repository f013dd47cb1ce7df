//! Draws the app state into a ratatui frame: a status line, the conversations on the
//! left (unread counts, marks), the open conversation on the right (local times, a date
//! line where the day changes, states of my messages, wrapped text, cards), the input
//! line, a line of keys or the last notice, and the overlays. Pure: the same state and
//! size draw the same screen, which is what the tests read.

use parley_protocol::business::Category;
use parley_protocol::e2e::content::Card;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use super::app::{App, Overlay};
use super::keys::HELP;
use super::model::{Body, Conversation, Entry};
use crate::render::badge;

/// How times read on this machine.
pub trait Clock {
    /// The date line for the day of `ms` (ms since the epoch), e.g. `2026-12-05`.
    fn day(&self, ms: u64) -> String;
    /// The time of day of `ms`, e.g. `21:58`.
    fn time(&self, ms: u64) -> String;
}

/// Columns of the message text's continuation lines (under the time).
const INDENT: usize = 6;

/// The short line of keys shown when there is no notice.
const KEY_LINE: &str =
    "Enter send  Up/Down switch  ^A card  ^O consent  ^B block  F1 help  ^C quit";

/// Draws the whole view. `me` is this profile's handle as shown in the status line.
pub fn draw(frame: &mut Frame, app: &App, me: &str, clock: &dyn Clock) {
    let [top, main, input, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let list_width = (frame.area().width / 4).clamp(18, 28);
    let [list, conversation] =
        Layout::horizontal([Constraint::Length(list_width), Constraint::Min(10)]).areas(main);
    status_line(frame, top, app, me);
    conversation_list(frame, list, app);
    open_conversation(frame, conversation, app, clock);
    input_line(frame, input, app);
    let bottom = match app.notice() {
        Some(notice) => Line::from(Span::styled(
            notice.to_owned(),
            Style::new().add_modifier(Modifier::BOLD),
        )),
        None => Line::from(Span::styled(
            KEY_LINE,
            Style::new().add_modifier(Modifier::DIM),
        )),
    };
    frame.render_widget(Paragraph::new(bottom), keys);
    if let Some(overlay) = app.overlay() {
        draw_overlay(frame, app, overlay, clock);
    }
}

fn status_line(frame: &mut Frame, area: Rect, app: &App, me: &str) {
    let connection = match app.offline() {
        Some(why) => format!("offline: {why}"),
        None => "online".to_owned(),
    };
    let left = format!(" parley · {me}");
    let pad = usize::from(area.width).saturating_sub(left.width() + connection.width() + 1);
    let line = Line::from(vec![
        Span::styled(left, Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(" ".repeat(pad)),
        Span::raw(connection),
    ]);
    frame.render_widget(
        Paragraph::new(line).style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
    );
}

fn conversation_list(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Conversations ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let open = app.open_conversation().map(|c| c.peer.account);
    let width = usize::from(inner.width);
    let height = usize::from(inner.height);
    let at = app
        .conversations()
        .iter()
        .position(|c| Some(c.peer.account) == open)
        .unwrap_or(0);
    let first = (at + 1).saturating_sub(height);
    let lines: Vec<Line> = app
        .conversations()
        .iter()
        .skip(first)
        .take(height)
        .map(|c| {
            let mut marks = String::new();
            if c.peer.safety_verified {
                marks.push_str(" ✓");
            }
            if c.peer.business.is_some() {
                marks.push_str(" [B]");
            }
            let unread = if c.unread > 0 {
                format!(" ({})", c.unread)
            } else {
                String::new()
            };
            let pointer = if Some(c.peer.account) == open {
                "▸"
            } else {
                " "
            };
            let name = c.peer.name();
            let room = width.saturating_sub(1 + marks.width() + unread.width());
            let name = truncate(&name, room);
            let pad = room.saturating_sub(name.width());
            let text = format!("{pointer}{name}{marks}{}{unread}", " ".repeat(pad));
            let mut style = Style::new();
            if Some(c.peer.account) == open {
                style = style.add_modifier(Modifier::REVERSED);
            }
            if c.unread > 0 {
                style = style.add_modifier(Modifier::BOLD);
            }
            Line::from(Span::styled(text, style))
        })
        .collect();
    let lines = if lines.is_empty() {
        vec![Line::from("(none yet)")]
    } else {
        lines
    };
    frame.render_widget(Paragraph::new(lines), inner);
}

fn open_conversation(frame: &mut Frame, area: Rect, app: &App, clock: &dyn Clock) {
    let Some(conversation) = app.open_conversation() else {
        let block = Block::bordered();
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let hint = wrap(
            "No conversation open. Up/Down opens one from the list; /open HANDLE starts \
             one. F1 lists the keys.",
            usize::from(inner.width),
            0,
        );
        frame.render_widget(Paragraph::new(lines_of(hint)), inner);
        return;
    };
    let peer = &conversation.peer;
    let safety = if peer.safety_verified {
        "safety number verified"
    } else {
        "safety number not verified"
    };
    // The whole title when it fits; else the safety mark short, then cut.
    let who = format!("{}{}", peer.name(), badge(peer.business.as_ref()));
    let room = usize::from(area.width).saturating_sub(2);
    let short = if peer.safety_verified { " ✓" } else { "" };
    let title = [format!(" {who} · {safety} "), format!(" {who}{short} ")]
        .into_iter()
        .find(|t| t.width() <= room)
        .unwrap_or_else(|| truncate(&format!(" {who}{short} "), room));
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = conversation_lines(conversation, usize::from(inner.width), clock);
    let height = usize::from(inner.height);
    let end = lines
        .len()
        .saturating_sub(usize::from(app.scroll()))
        .max(height.min(lines.len()));
    let start = end.saturating_sub(height);
    // The newest at the bottom, as in a chat.
    let mut shown: Vec<Line> = vec![Line::default(); height.saturating_sub(end - start)];
    shown.extend_from_slice(&lines[start..end]);
    frame.render_widget(Paragraph::new(shown), inner);
}

/// Every line of a conversation at `width` columns, oldest first.
pub fn conversation_lines(
    conversation: &Conversation,
    width: usize,
    clock: &dyn Clock,
) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut day = None;
    for entry in &conversation.entries {
        let this_day = clock.day(entry.at_ms);
        if day.as_ref() != Some(&this_day) {
            let label = format!("── {this_day} ──");
            let pad = width.saturating_sub(label.width()) / 2;
            lines.push(Line::from(Span::styled(
                format!("{}{label}", " ".repeat(pad)),
                Style::new().add_modifier(Modifier::DIM),
            )));
            day = Some(this_day);
        }
        entry_lines(&mut lines, entry, &conversation.peer.name(), width, clock);
    }
    lines
}

fn entry_lines(
    lines: &mut Vec<Line<'static>>,
    entry: &Entry,
    peer: &str,
    width: usize,
    clock: &dyn Clock,
) {
    let mine = entry.state.is_mine();
    let who = if mine { "you" } else { peer };
    let time = clock.time(entry.at_ms);
    match &entry.body {
        Body::Text(text) => {
            let mut wrapped = wrap(&format!("{time} {who}: {text}"), width, INDENT);
            if mine {
                let state = format!(" · {}", entry.state);
                let fits = wrapped
                    .last()
                    .is_some_and(|l| l.width() + state.width() <= width);
                let mut text_lines: Vec<Line<'static>> =
                    wrapped.drain(..).map(Line::from).collect();
                let dim = Style::new().add_modifier(Modifier::DIM);
                match text_lines.last_mut() {
                    Some(last) if fits => last.push_span(Span::styled(state, dim)),
                    _ => text_lines.push(Line::from(Span::styled(
                        format!("{}{}", " ".repeat(INDENT), state.trim_start()),
                        dim,
                    ))),
                }
                lines.extend(text_lines);
            } else {
                lines.extend(wrapped.into_iter().map(Line::from));
            }
        }
        Body::Card {
            card,
            category,
            answered,
        } => {
            let category = category.map(|c| format!(" ({c})")).unwrap_or_default();
            lines.extend(lines_of(wrap(
                &format!("{time} {who} sent a card{category}:"),
                width,
                INDENT,
            )));
            for text in card_lines(card, answered.as_deref(), clock) {
                for line in wrap(&text, width.saturating_sub(INDENT), 3) {
                    lines.push(Line::from(format!("{}{line}", " ".repeat(INDENT))));
                }
            }
        }
    }
}

/// A card's box, as in `parley inbox`, with its actions numbered for the keys.
fn card_lines(card: &Card, answered: Option<&str>, clock: &dyn Clock) -> Vec<String> {
    let label_width = card
        .fields
        .iter()
        .map(|f| f.label.width())
        .max()
        .unwrap_or(0);
    let mut out = vec![format!("+-- {}", card.title)];
    for field in &card.fields {
        let pad = label_width.saturating_sub(field.label.width());
        out.push(format!(
            "|  {}{}  {}",
            field.label,
            " ".repeat(pad),
            field.value
        ));
    }
    if let Some(expiry) = card.expires_at_ms {
        out.push(format!(
            "|  expires {} {}",
            clock.day(expiry),
            clock.time(expiry)
        ));
    }
    match answered {
        Some(action) => out.push(format!("+-- answered: {action}")),
        None if card.actions.is_empty() => out.push("+--".to_owned()),
        None => {
            let actions: Vec<String> = card
                .actions
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{} {}", i + 1, a.label))
                .collect();
            out.push(format!("+-- Ctrl-A to answer: {}", actions.join("   ")));
        }
    }
    out
}

fn input_line(frame: &mut Frame, area: Rect, app: &App) {
    let title = match app.open_conversation() {
        Some(c) => format!(" Message {} ", c.peer.name()),
        None => " Message ".to_owned(),
    };
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let editor = app.editor();
    let before: String = editor.text().chars().take(editor.cursor()).collect();
    let column = before.width();
    let room = usize::from(inner.width).max(1);
    let offset = (column + 1).saturating_sub(room);
    frame.render_widget(
        Paragraph::new(editor.text().to_owned())
            .scroll((0, u16::try_from(offset).unwrap_or(u16::MAX))),
        inner,
    );
    if app.overlay().is_none() {
        let x = u16::try_from(column - offset).unwrap_or(0);
        frame.set_cursor_position(Position::new(inner.x.saturating_add(x), inner.y));
    }
}

fn draw_overlay(frame: &mut Frame, app: &App, overlay: &Overlay, clock: &dyn Clock) {
    let peer = app.open_conversation().map(|c| &c.peer);
    let (title, body): (String, Vec<String>) = match overlay {
        Overlay::Help => {
            let mut body: Vec<String> = HELP
                .iter()
                .map(|(key, what)| format!("{key:<15} {what}"))
                .collect();
            body.push(String::new());
            body.push("In the list: (N) unread, ✓ safety number verified,".to_owned());
            body.push("[B] verified business. Esc closes this.".to_owned());
            (" Keys ".to_owned(), body)
        }
        Overlay::Card(id) => {
            let card = app
                .open_conversation()
                .and_then(Conversation::open_card)
                .filter(|(entry, _)| entry.id == *id)
                .map(|(_, card)| card);
            let mut body = Vec::new();
            if let Some(card) = card {
                body.push(card.title.clone());
                for (i, action) in card.actions.iter().enumerate() {
                    body.push(format!("  {}  {}", i + 1, action.label));
                }
                if let Some(expiry) = card.expires_at_ms {
                    body.push(format!(
                        "expires {} {}",
                        clock.day(expiry),
                        clock.time(expiry)
                    ));
                }
            }
            body.push("Your answer is signed by you. Esc cancels.".to_owned());
            (" Answer the card ".to_owned(), body)
        }
        Overlay::Consent => {
            let consent = peer.map(|p| p.consent).unwrap_or_default();
            let mut body = vec!["What may it send you? A number switches it:".to_owned()];
            for (i, category) in Category::GRANTABLE.iter().enumerate() {
                let mark = if consent.contains(*category) {
                    "x"
                } else {
                    " "
                };
                body.push(format!("  {}  [{mark}] {category}", i + 1));
            }
            body.push("  0  withdraw all (like STOP)".to_owned());
            body.push("Esc cancels.".to_owned());
            (
                format!(
                    " Consent for {} ",
                    peer.map(|p| p.name()).unwrap_or_default()
                ),
                body,
            )
        }
        Overlay::Moderate => (
            format!(" {} ", peer.map(|p| p.name()).unwrap_or_default()),
            vec![
                "b  block: the server refuses its messages to you".to_owned(),
                "u  unblock".to_owned(),
                "r  report it to the server's operator".to_owned(),
                "Esc cancels.".to_owned(),
            ],
        ),
    };
    let area = frame.area();
    let width = area.width.saturating_sub(4).min(70);
    let lines: Vec<String> = body
        .iter()
        .flat_map(|l| wrap(l, usize::from(width.saturating_sub(2)), 2))
        .collect();
    let height = u16::try_from(lines.len() + 2)
        .unwrap_or(u16::MAX)
        .min(area.height);
    let rect = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines_of(lines)).block(Block::bordered().title(title)),
        rect,
    );
}

fn lines_of(lines: Vec<String>) -> Vec<Line<'static>> {
    lines.into_iter().map(Line::from).collect()
}

/// `text` cut to `width` columns (with `…` when cut).
fn truncate(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// Word-wraps `text` to `width` columns; lines after the first start with `indent`
/// spaces; a word longer than a line is cut; line breaks in the text are kept.
pub fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let width = width.max(indent + 1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        let mut used = 0;
        let start = |lines: &Vec<String>| if lines.is_empty() { 0 } else { indent };
        for word in paragraph.split(' ') {
            let word_width = word.width();
            if used > 0 && used + 1 + word_width > width {
                lines.push(std::mem::take(&mut line));
                used = 0;
            }
            if used == 0 {
                let pad = start(&lines);
                line.push_str(&" ".repeat(pad));
                used = pad;
            } else {
                line.push(' ');
                used += 1;
            }
            for c in word.chars() {
                let w = c.width().unwrap_or(0);
                if used + w > width && used > indent {
                    lines.push(std::mem::take(&mut line));
                    line.push_str(&" ".repeat(indent));
                    used = indent;
                }
                line.push(c);
                used += w;
            }
        }
        lines.push(line);
    }
    lines
}
