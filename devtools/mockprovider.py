"""A fake upstream LLM provider for tests and benchmarks, as a pure ASGI application.

It speaks the OpenAI chat-completions, the OpenAI Responses and the Anthropic Messages wire
formats exactly as the real services do, streaming included, so the official SDKs (and the
proxy) parse it unchanged.
It needs neither Django nor a database; ``python manage.py mock_provider`` serves it with Daphne.

Endpoints
    ``POST /v1/chat/completions``  OpenAI; needs ``Authorization: Bearer <key>``.
    ``POST /v1/responses``         OpenAI Responses; same auth, ``x-request-id``; needs ``model``
                                   and ``input`` (a string or a list of items). It stores
                                   nothing: a ``previous_response_id`` gets OpenAI's 400 for an
                                   id it does not hold (``previous_response_not_found``), and
                                   a reasoning item passed back without encrypted content the
                                   400 for an item not persisted. Its stream is OpenAI's
                                   event sequence (``event: <type>`` lines, every event with
                                   its ``sequence_number``): ``response.created``,
                                   ``response.in_progress``, then per output item
                                   ``output_item.added``, its part's ``added``, its deltas,
                                   ``done`` events and ``output_item.done``; then
                                   ``response.completed`` (``response.incomplete`` when cut at
                                   ``max_output_tokens``) with the whole output and usage.
    ``GET  /v1/models``            OpenAI model list (one model, ``mock-model``; no auth).
    ``POST /v1/messages``          Anthropic; needs a key in ``x-api-key`` (or, as the installed
                                   SDK sends it, ``Authorization: Bearer``), an
                                   ``anthropic-version`` header and ``max_tokens``. A query
                                   string (``?beta=true``) and ``anthropic-beta`` headers are
                                   accepted and kept in the record.
    ``POST /v1/messages/count_tokens``  Anthropic; same auth and version header; answers
                                   ``{"input_tokens": N}`` by the prompt-token rule below. It is
                                   recorded like a call, but no fault applies to it.
    ``GET  /_mock/stats``          ``{"calls": N, "requests": [record, ...]}`` (last 1000).
    ``POST /_mock/reset``          forget the records, restore the start-up configuration.
    ``GET|POST /_mock/config``     read / merge the configuration (see ``MockProvider.configure``).

    Unknown top-level fields and unknown content block types are accepted silently; the
    record keeps the body as received.

Output
    A reply is a list of blocks, each streamed as pieces, each piece exactly one output token:

    1. thinking (``config["thinking"]``, in pieces of two words): on Anthropic when the request
       has ``thinking: {"type": "enabled" | "adaptive"}``, as a ``thinking`` block with a
       signature (``thinking_delta`` pieces, then a ``signature_delta``); on OpenAI whenever
       configured, as ``reasoning_content`` (Moonshot / DeepSeek style), also counted in
       ``completion_tokens_details.reasoning_tokens``.
       On Responses, whenever configured, as a ``reasoning`` output item whose summary is
       that text (``reasoning_summary_text`` deltas), with ``encrypted_content`` (the text
       and an HMAC of it, checked when it comes back: 400 otherwise) when ``include`` has
       ``"reasoning.encrypted_content"``; counted in ``output_tokens_details.reasoning_tokens``.
    2. then one of:

       - after a tool result (the last message is OpenAI ``role: tool`` messages, an
         Anthropic user message with ``tool_result`` blocks, or the last Responses input items
         are ``function_call_output`` / ``custom_tool_call_output``): the text
         ``"Tool results: " + " | ".join(each result's text)`` in pieces of two words (a
         result's text: its string content, or its text parts concatenated); finish
         ``stop`` / ``end_turn``;
       - when the request offers tools (and ``tool_choice`` is not none) named in
         ``config["tool_calls"]``: a call of each of those, in the configured order
         (``config["tool_text"]``, in pieces of two words, first when set); their compact JSON
         arguments in pieces of ``arguments_chunk`` characters; ids ``call_<24 hex>`` /
         ``toolu_<24 hex>``; finish ``tool_calls`` / ``tool_use``. On Responses each is a
         ``function_call`` item (``function_call_arguments`` deltas), or, for a tool the request
         offers as ``{"type": "custom"}`` (Codex's apply_patch), a ``custom_tool_call`` whose
         ``input`` is the configured arguments' ``"input"`` string (else their compact JSON),
         in the same pieces (``custom_tool_call_input`` deltas);
       - otherwise ``chunks`` pieces, piece ``i`` being ``text[i % len(text)]``
         (``DEFAULT_TEXT`` unless configured).

    When the request holds images (OpenAI ``image_url`` parts; Responses ``input_image``
    parts, also in tool outputs; Anthropic ``image`` blocks, also inside ``tool_result``
    content), the reply's text, if it has any, starts with one more
    piece, ``"I see N image(s). "``. Images are checked as the real APIs check them (400
    otherwise).

    The reply text is cut just before the first stop sequence it contains (OpenAI ``stop``;
    Anthropic ``stop_sequences``), dropping what follows: finish ``stop`` /
    ``stop_reason: "stop_sequence"`` with ``stop_sequence`` set. Then, when the pieces
    outnumber the request's ``max_tokens`` (OpenAI: ``max_completion_tokens`` or
    ``max_tokens``), only that many are sent: ``finish_reason: "length"`` /
    ``stop_reason: "max_tokens"`` (a cut tool call keeps its partial arguments on OpenAI and
    streams; a non-streamed Anthropic reply gives it ``input: {}``). Responses has no stop
    sequences; past ``max_output_tokens`` its reply has ``status: "incomplete"``,
    ``incomplete_details: {"reason": "max_output_tokens"}`` and the cut item ``incomplete``.

    ``config["cache"]`` ``{"read": R, "write": W}`` makes replies report cache figures:
    Anthropic ``cache_read_input_tokens = R``, ``cache_creation_input_tokens = W`` and
    ``input_tokens = max(prompt - R - W, 0)``, in ``message_start`` and ``message_delta``
    alike (streams always repeat the input and cache counts in ``message_delta``); OpenAI
    ``prompt_tokens`` stays the total and ``prompt_tokens_details.cached_tokens = R``;
    Responses likewise (``input_tokens`` and ``input_tokens_details.cached_tokens = R``).

Checks a real API makes that the mock makes too (400 in the API's own error shape)
    A tool result must answer a tool call of the assistant message just before it, and
    every tool call followed by another message must be answered there (OpenAI's and
    Anthropic's own messages). A ``thinking`` block passed back must carry the signature the
    mock gave its text: base64 of an HMAC-SHA256 with a per-process secret ("Invalid
    `signature` in `thinking` block" otherwise). ``thinking.budget_tokens`` must be at least
    1024 and below ``max_tokens``. Stop sequences must be strings (Anthropic: not only
    whitespace; OpenAI: at most 4).

Prompt tokens
    ``sum(3 + words(message content) for each message)``, plus ``3 + words(system)`` when an
    Anthropic request has a ``system`` field, plus ``3 + words(description)`` for each tool
    definition (OpenAI ``function.description``, Anthropic ``description``; none counts 0),
    where ``words(x)`` is ``len(x.split())`` for a string and, for a list, the sum of that over
    its ``{"type": "text"}`` parts and over the content of its ``tool_result`` blocks; any other
    content (images, tool calls, thinking, ...) counts zero words. A Responses request counts
    ``3 + words`` for each message item (a string input is one) and each tool output item,
    for ``instructions`` and for each tool's ``description``, words being those of strings and
    of ``input_text`` / ``output_text`` parts.

Record
    Each call's record (``/_mock/stats``) has, besides the request (``path``, ``query``,
    ``headers``, ``body``...) and timings: ``text_sent`` (text pieces only), ``chunks_sent``
    (all pieces), ``usage`` (``input_tokens`` = the prompt count, ``output_tokens``, plus
    ``cache_read_tokens`` / ``cache_write_tokens`` when cache figures are reported and
    ``reasoning_tokens`` when thinking is sent), ``images``, ``tool_results`` (``[{tool_use_id,
    text, is_error, images}]`` or null), ``tool_calls`` (``[{id, name, arguments}]``),
    ``thinking`` and ``stop_sequence``.

Timing
    Headers, and the frames that precede the content (OpenAI's role chunk; Anthropic's
    ``message_start``, ``content_block_start`` and ``ping``), go out at once; the first piece
    waits ``ttft`` seconds, each further piece ``chunk_delay`` seconds; a later block's opening
    frames (a tool call's id and name; Anthropic's block stop and start) go with its first
    piece, after that piece's wait. A non-streamed reply is
    sent after the whole generation time, ``ttft + chunk_delay * (n - 1)``. Every SSE event is
    its own ASGI body message. A client disconnect is noticed during any wait and ends the call.

Faults (``config["faults"]``)
    The first rule whose ``match`` fits the (validated) request and whose ``times`` is not
    spent is applied; see ``MockProvider.configure`` for the actions. ``break_after`` under
    Daphne closes the TCP connection mid-body, so the client sees a truncated chunked
    response, exactly like a provider dying mid-stream. Other ASGI servers offer no way to do
    that, so there it ends the body cleanly but without the terminating events ([DONE],
    ``message_stop``), which a careful client must treat as a failure all the same.

The implementation is the ``devtools.mock`` package; this module re-exports its public names.
"""

from devtools.mock.app import MockProvider, build_app
from devtools.mock.base import Api, Receive, Scope, Send
from devtools.mock.config import Config, ConfigError, Fault
from devtools.mock.tokens import prompt_tokens

__all__ = [
    "Api",
    "Config",
    "ConfigError",
    "Fault",
    "MockProvider",
    "Receive",
    "Scope",
    "Send",
    "build_app",
    "prompt_tokens",
]
