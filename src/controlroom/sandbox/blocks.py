"""Block Kit validation with Slack's limits (PLATFORM.md section 7).

Returns the ``response_metadata.messages`` Slack would send, or an empty list.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

BLOCK_TYPES = {
    "section",
    "divider",
    "image",
    "actions",
    "context",
    "input",
    "header",
    "file",
    "rich_text",
    "video",
    "markdown",
    "call",
}
ELEMENT_TYPES = {
    "button",
    "static_select",
    "external_select",
    "users_select",
    "conversations_select",
    "channels_select",
    "multi_static_select",
    "multi_external_select",
    "multi_users_select",
    "multi_conversations_select",
    "multi_channels_select",
    "overflow",
    "datepicker",
    "timepicker",
    "datetimepicker",
    "checkboxes",
    "radio_buttons",
    "plain_text_input",
    "email_text_input",
    "url_text_input",
    "number_input",
    "image",
    "rich_text_input",
    "file_input",
    "workflow_button",
}


def _text(obj: Any, where: str, limit: int, errors: list[str]) -> None:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        errors.append(f"[ERROR] {where} must be a text object [json-pointer:{where}]")
        return
    if not isinstance(obj.get("text"), str):
        errors.append(f"[ERROR] missing required field: text [json-pointer:{where}/text]")
    elif len(obj["text"]) > limit:
        errors.append(f"[ERROR] must be less than {limit + 1} characters [json-pointer:{where}]")


def _element(el: Any, where: str, errors: list[str]) -> None:
    if not isinstance(el, dict) or el.get("type") not in ELEMENT_TYPES:
        errors.append(f"[ERROR] unsupported element type [json-pointer:{where}]")
        return
    action_id = el.get("action_id")
    if action_id is not None and (not isinstance(action_id, str) or len(action_id) > 255):
        errors.append(f"[ERROR] action_id must be <= 255 characters [json-pointer:{where}]")
    if el["type"] == "button":
        _text(el.get("text"), f"{where}/text", 75, errors)
        value = el.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > 2000):
            errors.append(f"[ERROR] must be less than 2001 characters [json-pointer:{where}/value]")
        if el.get("style") not in (None, "primary", "danger"):
            errors.append(f"[ERROR] invalid style [json-pointer:{where}/style]")
    options = el.get("options")
    if options is not None:
        if not isinstance(options, list) or len(options) > 100:
            errors.append(f"[ERROR] options must be a list of <= 100 [json-pointer:{where}]")
        else:
            for j, opt in enumerate(options):
                if not isinstance(opt, dict):
                    errors.append(f"[ERROR] invalid option [json-pointer:{where}/options/{j}]")
                    continue
                _text(opt.get("text"), f"{where}/options/{j}/text", 75, errors)
                value = opt.get("value")
                if not isinstance(value, str) or len(value) > 150:
                    errors.append(f"[ERROR] invalid value [json-pointer:{where}/options/{j}]")


def validate_blocks(blocks: Any, max_blocks: int = 50) -> list[str]:
    errors: list[str] = []
    if not isinstance(blocks, list):
        return ["[ERROR] blocks must be an array [json-pointer:/blocks]"]
    if len(blocks) > max_blocks:
        return [f"[ERROR] no more than {max_blocks} items allowed [json-pointer:/blocks]"]
    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            errors.append(f"[ERROR] unsupported type [json-pointer:{where}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None and (not isinstance(block_id, str) or len(block_id) > 255):
            errors.append(f"[ERROR] block_id must be <= 255 characters [json-pointer:{where}]")
        kind = block["type"]
        if kind == "section":
            if "text" not in block and "fields" not in block:
                errors.append(f"[ERROR] section needs text or fields [json-pointer:{where}]")
            if "text" in block:
                _text(block["text"], f"{where}/text", 3000, errors)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > 10:
                    errors.append(f"[ERROR] fields must be <= 10 items [json-pointer:{where}]")
                else:
                    for j, f in enumerate(fields):
                        _text(f, f"{where}/fields/{j}", 2000, errors)
            if "accessory" in block:
                _element(block["accessory"], f"{where}/accessory", errors)
        elif kind == "header":
            _text(block.get("text"), f"{where}/text", 150, errors)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                errors.append(f"[ERROR] actions needs 1-25 elements [json-pointer:{where}]")
            else:
                for j, el in enumerate(elements):
                    _element(el, f"{where}/elements/{j}", errors)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                errors.append(f"[ERROR] context needs 1-10 elements [json-pointer:{where}]")
        elif kind == "input":
            _text(block.get("label"), f"{where}/label", 2000, errors)
            _element(block.get("element"), f"{where}/element", errors)
        elif kind == "markdown":
            text = block.get("text")
            if not isinstance(text, str) or len(text) > 12000:
                errors.append(f"[ERROR] markdown text <= 12000 [json-pointer:{where}/text]")
    return errors


def validate_view(view: Any) -> list[str]:
    if not isinstance(view, dict):
        return ["[ERROR] view must be an object [json-pointer:/view]"]
    errors: list[str] = []
    kind = view.get("type")
    if kind not in ("modal", "home"):
        errors.append("[ERROR] view type must be modal or home [json-pointer:/view/type]")
    if kind == "modal":
        _text(view.get("title"), "/view/title", 24, errors)
        for key in ("submit", "close"):
            if key in view:
                _text(view[key], f"/view/{key}", 24, errors)
    meta = view.get("private_metadata")
    if meta is not None and (not isinstance(meta, str) or len(meta) > 3000):
        errors.append("[ERROR] private_metadata <= 3000 [json-pointer:/view/private_metadata]")
    callback = view.get("callback_id")
    if callback is not None and (not isinstance(callback, str) or len(callback) > 255):
        errors.append("[ERROR] callback_id <= 255 [json-pointer:/view/callback_id]")
    errors.extend(validate_blocks(view.get("blocks", []), max_blocks=100))
    return errors


def normalise_blocks(blocks: list[Any], new_id: Callable[[], str]) -> list[Any]:
    """What Slack stores: every block gets a ``block_id``, every interactive element an
    ``action_id``, input blocks ``optional``/``dispatch_action`` and plain_text ``emoji``."""
    out = copy.deepcopy(blocks)
    for block in out:
        if not isinstance(block, dict):
            continue
        block.setdefault("block_id", new_id())
        elements: list[Any] = []
        if block.get("type") == "actions":
            elements = list(block.get("elements", []))
        elif block.get("type") == "section" and isinstance(block.get("accessory"), dict):
            elements = [block["accessory"]]
        elif block.get("type") == "input":
            block.setdefault("optional", False)
            block.setdefault("dispatch_action", False)
            if isinstance(block.get("element"), dict):
                elements = [block["element"]]
        for el in elements:
            if isinstance(el, dict) and el.get("type") in ELEMENT_TYPES and el["type"] != "image":
                el.setdefault("action_id", new_id())
        for key in ("text", "label"):
            obj = block.get(key)
            if isinstance(obj, dict) and obj.get("type") == "plain_text":
                obj.setdefault("emoji", True)
    return out
