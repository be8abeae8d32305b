"""Slack ``mrkdwn`` -> safe HTML, the way Slack's clients show message text.

Everything that is not markup is HTML-escaped; ``<...>`` control sequences become links,
mentions and channel links; ``:shortcode:`` emoji become characters. Only ``http``,
``https`` and ``mailto`` links are ever emitted as ``href``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from markupsafe import Markup, escape

#: Shortcodes Slack users and our workflows use most (a small, readable subset).
EMOJI: dict[str, str] = {
    "+1": "\U0001f44d",
    "thumbsup": "\U0001f44d",
    "-1": "\U0001f44e",
    "thumbsdown": "\U0001f44e",
    "rotating_light": "\U0001f6a8",
    "white_check_mark": "\u2705",
    "heavy_check_mark": "\u2714\ufe0f",
    "x": "\u274c",
    "rocket": "\U0001f680",
    "warning": "\u26a0\ufe0f",
    "eyes": "\U0001f440",
    "pray": "\U0001f64f",
    "tada": "\U0001f389",
    "fire": "\U0001f525",
    "heart": "\u2764\ufe0f",
    "joy": "\U0001f602",
    "smile": "\U0001f604",
    "slightly_smiling_face": "\U0001f642",
    "thinking_face": "\U0001f914",
    "raised_hands": "\U0001f64c",
    "clap": "\U0001f44f",
    "wave": "\U0001f44b",
    "ok_hand": "\U0001f44c",
    "100": "\U0001f4af",
    "bug": "\U0001f41b",
    "hourglass": "\u231b",
    "hourglass_flowing_sand": "\u23f3",
    "construction": "\U0001f6a7",
    "red_circle": "\U0001f534",
    "large_green_circle": "\U0001f7e2",
    "large_yellow_circle": "\U0001f7e1",
    "large_blue_circle": "\U0001f535",
    "white_circle": "\u26aa",
    "black_circle": "\u26ab",
    "arrow_right": "\u27a1\ufe0f",
    "arrow_left": "\u2b05\ufe0f",
    "arrows_counterclockwise": "\U0001f504",
    "leftwards_arrow_with_hook": "\u21a9\ufe0f",
    "rewind": "\u23ea",
    "package": "\U0001f4e6",
    "memo": "\U0001f4dd",
    "bulb": "\U0001f4a1",
    "question": "\u2753",
    "exclamation": "\u2757",
    "lock": "\U0001f512",
    "bell": "\U0001f514",
    "calendar": "\U0001f4c5",
    "clipboard": "\U0001f4cb",
    "pushpin": "\U0001f4cc",
    "link": "\U0001f517",
    "sos": "\U0001f198",
    "no_entry": "\u26d4",
    "no_entry_sign": "\U0001f6ab",
    "stopwatch": "\u23f1\ufe0f",
    "chart_with_upwards_trend": "\U0001f4c8",
    "chart_with_downwards_trend": "\U0001f4c9",
    "speech_balloon": "\U0001f4ac",
    "mag": "\U0001f50d",
    "gear": "\u2699\ufe0f",
    "robot_face": "\U0001f916",
    "sparkles": "\u2728",
    "star": "\u2b50",
    "information_source": "\u2139\ufe0f",
    "green_heart": "\U0001f49a",
    "sweat_smile": "\U0001f605",
    "muscle": "\U0001f4aa",
    "coffee": "\u2615",
    "boom": "\U0001f4a5",
    "ship": "\U0001f6a2",
    "checkered_flag": "\U0001f3c1",
    "white_circle_check": "\u2705",
}

#: The reactions the picker offers, in order.
PICKER = (
    "+1",
    "white_check_mark",
    "eyes",
    "rotating_light",
    "pray",
    "tada",
    "rocket",
    "fire",
    "heart",
    "joy",
    "x",
    "warning",
    "100",
    "raised_hands",
    "thinking_face",
    "bug",
)

_SAFE_SCHEMES = ("http://", "https://", "mailto:")
_CONTROL = re.compile(r"<([^<>\n]{1,2000})>")
_EMOJI = re.compile(r":([a-z0-9_+'-]{1,64}):")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]*?\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])")
_PRE = re.compile(r"```(.+?)```", re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
_BARE_URL = re.compile(r"(?<![\w/])https?://[^\s<>\x00\"]+")
_TRAILING = ".,;:!?)]}'"

UserName = Callable[[str], str | None]


def emoji(name: str) -> str | None:
    """The character for a shortcode (``"rocket"``), or None when unknown."""
    return EMOJI.get(name.strip(":"))


def _slack_unescape(text: str) -> str:
    """Slack escapes ``&``, ``<`` and ``>`` in message text; undo it before we escape."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _esc(text: str) -> str:
    return str(escape(_slack_unescape(text)))


def _emojify(escaped: str) -> str:
    def sub(match: re.Match[str]) -> str:
        char = EMOJI.get(match.group(1))
        if char is None:
            return match.group(0)
        return f'<span class="emoji" title=":{match.group(1)}:">{char}</span>'

    return _EMOJI.sub(sub, escaped)


class Renderer:
    """Renders mrkdwn with names resolved through the given lookups."""

    def __init__(
        self,
        user_name: UserName | None = None,
        channel_name: UserName | None = None,
        group_name: UserName | None = None,
    ) -> None:
        self.user_name = user_name or (lambda _ident: None)
        self.channel_name = channel_name or (lambda _ident: None)
        self.group_name = group_name or (lambda _ident: None)

    # -- control sequences ---------------------------------------------------------
    def _control(self, body: str) -> str | None:
        """HTML for one ``<...>`` sequence, or None to show it literally."""
        target, _, label = body.partition("|")
        if target.startswith("@") and re.fullmatch(r"@[UW][A-Z0-9]{2,}", target):
            name = self.user_name(target[1:]) or label or target[1:]
            return f'<span class="mention" data-user="{escape(target[1:])}">@{_esc(name)}</span>'
        if target.startswith("#") and re.fullmatch(r"#[CGD][A-Z0-9]{2,}", target):
            name = self.channel_name(target[1:]) or label or target[1:]
            return f'<a class="channel-link" href="/?c={escape(target[1:])}">#{_esc(name)}</a>'
        if target.startswith("!subteam^"):
            ident = target.removeprefix("!subteam^")
            name = self.group_name(ident) or label.lstrip("@") or ident
            return f'<span class="mention group">@{_esc(name)}</span>'
        if target in ("!here", "!channel", "!everyone"):
            return f'<span class="mention broadcast">@{target[1:]}</span>'
        if target.startswith("!date^"):
            return _esc(label or target)
        lowered = target.lower()
        if lowered.startswith(_SAFE_SCHEMES):
            url = _slack_unescape(target)
            shown = label or (url.removeprefix("mailto:") if lowered.startswith("mailto:") else url)
            return (
                f'<a href="{escape(url)}" target="_blank" rel="noopener noreferrer">'
                f"{_esc(shown)}</a>"
            )
        return None

    # -- inline text ---------------------------------------------------------------
    def _inline(self, text: str, *, emoji_on: bool = True) -> str:
        """Links, mentions, bold/italic/strike and emoji; ``text`` is raw Slack text."""
        text = text.replace("\x00", "")
        slots: list[str] = []

        def hold(fragment: str) -> str:
            slots.append(fragment)
            return f"\x00{len(slots) - 1}\x00"

        def code(match: re.Match[str]) -> str:
            return hold(f"<code>{_esc(match.group(1))}</code>")

        def control(match: re.Match[str]) -> str:
            rendered = self._control(match.group(1))
            return hold(rendered) if rendered is not None else hold(_esc(match.group(0)))

        def bare(match: re.Match[str]) -> str:
            url = match.group(0)
            tail = ""
            while url and url[-1] in _TRAILING:
                url, tail = url[:-1], url[-1] + tail
            rendered = self._control(url)
            return (hold(rendered) if rendered is not None else url) + tail

        text = _CODE.sub(code, text)
        text = _CONTROL.sub(control, text)
        text = _BARE_URL.sub(bare, text)
        out = _esc(text)
        out = _BOLD.sub(r"<b>\1</b>", out)
        out = _ITALIC.sub(r"<i>\1</i>", out)
        out = _STRIKE.sub(r"<s>\1</s>", out)
        if emoji_on:
            out = _emojify(out)
        return re.sub(r"\x00(\d+)\x00", lambda m: slots[int(m.group(1))], out)

    def _lines(self, text: str) -> str:
        """Blockquotes (``> ``) and line breaks around inline rendering."""
        parts: list[str] = []
        quote: list[str] = []

        def flush() -> None:
            if quote:
                parts.append("<blockquote>" + "<br>".join(quote) + "</blockquote>")
                quote.clear()

        lines = text.split("\n")
        plain: list[str] = []
        for line in lines:
            stripped = line
            for prefix in ("&gt; ", "> ", "&gt;", ">"):
                if line.startswith(prefix) and (prefix.endswith(" ") or len(line) > len(prefix)):
                    stripped = line[len(prefix) :]
                    break
            else:
                if quote:
                    flush()
                plain.append(self._inline(line))
                continue
            if plain:
                parts.append("<br>".join(plain))
                plain.clear()
            quote.append(self._inline(stripped))
        flush()
        if plain:
            parts.append("<br>".join(plain))
        return "".join(parts)

    def mrkdwn(self, text: str | None) -> Markup:
        """Full mrkdwn: code blocks, quotes, inline formatting, links, mentions, emoji."""
        if not text:
            return Markup("")
        out: list[str] = []
        pos = 0
        for match in _PRE.finditer(text):
            if match.start() > pos:
                out.append(self._lines(text[pos : match.start()]))
            body = match.group(1).strip("\n")
            out.append(f"<pre>{_esc(body)}</pre>")
            pos = match.end()
        if pos < len(text):
            out.append(self._lines(text[pos:]))
        return Markup("".join(out))  # noqa: S704 - every fragment above is escaped

    def plain(self, text: str | None, emoji_on: bool = True) -> Markup:
        """``plain_text``: escaped, with emoji shortcodes when ``emoji`` is on."""
        if not text:
            return Markup("")
        out = str(escape(text))
        if emoji_on:
            out = _emojify(out)
        return Markup(out.replace("\n", "<br>"))  # noqa: S704 - escaped above

    def text_object(self, obj: object) -> Markup:
        """A Block Kit text object (``plain_text`` or ``mrkdwn``)."""
        if isinstance(obj, str):
            return self.plain(obj)
        if not isinstance(obj, dict):
            return Markup("")
        text = obj.get("text")
        if not isinstance(text, str):
            return Markup("")
        if obj.get("type") == "mrkdwn":
            return self.mrkdwn(text)
        return self.plain(text, emoji_on=obj.get("emoji", True) is not False)
