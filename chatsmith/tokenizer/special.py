"""Special tokens: ChatML turn markers (as Qwen uses) and Hermes tool-call tags."""

BOS = "<|endoftext|>"  # document separator; every pretraining document starts with it
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # ends every turn; the assistant's is trained and is the stop token
TOOL_CALL = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
TOOL_RESPONSE = "<tool_response>"
TOOL_RESPONSE_END = "</tool_response>"

# Order fixes the ids: they take 0..6, before the BPE merges.
SPECIAL_TOKENS = [BOS, IM_START, IM_END, TOOL_CALL, TOOL_CALL_END, TOOL_RESPONSE, TOOL_RESPONSE_END]

# What chatsmith's chat format cannot do without; a model imported from elsewhere may lack the
# tool tags, which then are plain text (added as tokens only when asked: fresh rows need training).
REQUIRED_TOKENS = [BOS, IM_START, IM_END]
TOOL_TOKENS = [TOOL_CALL, TOOL_CALL_END, TOOL_RESPONSE, TOOL_RESPONSE_END]

# The GPT-4 pre-tokenizer split pattern (tiktoken's cl100k_base).
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
