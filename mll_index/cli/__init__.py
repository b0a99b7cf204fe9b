"""The `mll-index` command line: each command parses options, calls one public function, prints."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mll_index import __version__
from mll_index.errors import InputError, MLLIndexError

if TYPE_CHECKING:
    from mll_index.index.embed import EmbeddingCache

log = logging.getLogger("mll_index")


def _read_names(names: tuple[str, ...], file: str | None, what: str = "class names") -> list[str]:
    """Class names (or other items: `what`) from arguments, a file, or stdin ('-' or nothing), one per line.

    Files and stdin are read by `userfiles` (byte-order marks, UTF-16, CR LF; names normalised).
    """
    from mll_index.core.userfiles import decode_user_bytes, names_from_text, read_names_file

    if names and file:
        raise InputError(f"give {what} as arguments or with --file, not both")
    if names:
        return list(names)
    if file and file != "-":
        return read_names_file(Path(file), what)
    if sys.stdin.isatty():
        raise InputError(f"no {what}: give them as arguments, with --file, or on stdin")
    return names_from_text(decode_user_bytes(sys.stdin.buffer.read(), "stdin"), "stdin", what)


class _PositiveFinite(click.FloatRange):
    """A FloatRange that also refuses nan (it passes every range check) and inf (no JSON number)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _index_option(f):  # type: ignore[no-untyped-def]
    return click.option("--index", "index_path", type=click.Path(path_type=Path), default=None,
                        help="Index directory [default: $MLL_INDEX_HOME/default or ./indexes/default].")(f)


def _embedding_cache() -> EmbeddingCache:
    """The user's caption-vector cache (<cache>/embeddings.sqlite), shared by every command."""
    from mll_index.index.embed import EmbeddingCache
    from mll_index.core.paths import cache_dir

    return EmbeddingCache(cache_dir() / "embeddings.sqlite")


def _open_index(path: Path | None):  # type: ignore[no-untyped-def]
    from mll_index.core.paths import default_index_path
    from mll_index.index.node_index import load_index

    path = path or default_index_path()
    if not path.exists():
        raise InputError(f"{path}: no index here; build one with `mll-index build --index {path}`")
    return load_index(path)


@click.group()
@click.version_option(__version__, prog_name="mll-index")
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def cli(verbose: bool) -> None:
    """Choose vision-language models per class from an index built once."""
    # Without -v, third-party logging (open_clip's root logger, transformers) stays quiet, while
    # mll-index's own warnings (published labels dropped on a rebuild, skipped folders, retries)
    # reach stderr as one line each; -v shows every logger at INFO.
    ours = logging.getLogger("mll_index")
    if verbose:
        ours.removeHandler(_WARNING_LINES)
        ours.setLevel(logging.NOTSET)
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    root = logging.getLogger()
    if not root.handlers:
        # No handler on the root: third-party records below CRITICAL are dropped where they are
        # made, and ours still propagate (to a host's handlers, such as pytest's) without printing twice.
        root.setLevel(logging.CRITICAL)
        # A handler that prints nothing, so that a library's module-level `logging.info(...)` (open_clip's
        # create_model) finds one and does not call basicConfig, whose raw stderr handler would print
        # every later warning of ours a second time as `WARNING:mll_index...`.
        root.addHandler(logging.NullHandler())
    if _WARNING_LINES not in ours.handlers:
        ours.addHandler(_WARNING_LINES)
    ours.setLevel(logging.WARNING)


class _WarningLine(logging.Handler):
    """Writes a log record as one `mll-index: warning: ...` line on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(f"mll-index: warning: {' '.join(self.format(record).split())}", err=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the command
            self.handleError(record)


_WARNING_LINES = _WarningLine(logging.WARNING)


def _node_set(node_set: str, wnids: str | None, folder: Path | None):  # type: ignore[no-untyped-def]
    from mll_index.index.graph import folder_node_set, recipe_node_set, wnid_node_set

    if wnids and folder:
        raise InputError("give --wnids or --folder, not both")
    if wnids:
        from mll_index.core.userfiles import read_user_text

        return wnid_node_set(read_user_text(Path(wnids)).split())
    if folder:
        return folder_node_set(folder)
    return recipe_node_set(node_set)


_node_set_options = [
    click.option("--node-set", default="visual", show_default=True, help="Named node-set recipe."),
    click.option("--wnids", type=click.Path(), default=None, help="File of wnids (whitespace-separated) as the node set."),
    click.option("--folder", type=click.Path(path_type=Path), default=None,
                 help="Sample dataset root/<wnid>/*.jpg: its wnid folders are the node set."),
]


def _with(options):  # type: ignore[no-untyped-def]
    def wrap(f):  # type: ignore[no-untyped-def]
        for option in reversed(options):
            f = option(f)
        return f
    return wrap


_expander_options = [
    click.option("--expander", type=click.Choice(["wordnet", "llm", "file"]), default="wordnet", show_default=True,
                 help="Caption expander."),
    click.option("--llm-url", default=None, help="OpenAI-compatible base URL for --expander llm (or $MLL_INDEX_LLM_URL)."),
    click.option("--llm-model", default=None, help="Chat model for --expander llm (or $MLL_INDEX_LLM_MODEL)."),
    click.option("--llm-key-env", default="OPENAI_API_KEY", show_default=True, help="Environment variable holding the API key."),
    click.option("--captions", "caption_file", type=click.Path(path_type=Path), default=None,
                 help="JSON {class name or wnid: [captions]} for --expander file."),
]


def _expander(expander: str, llm_url: str | None, llm_model: str | None, llm_key_env: str, caption_file: Path | None):  # type: ignore[no-untyped-def]
    from mll_index.index.captions import make_expander

    return make_expander(expander, base_url=llm_url, model=llm_model, api_key_env=llm_key_env, caption_file=caption_file)


@cli.group()
def graph() -> None:
    """Build and inspect the semantic graph (WordNet 3.0 nouns)."""


@graph.command("build")
@_with(_node_set_options)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Graph JSON file to write.")
def graph_build(node_set: str, wnids: str | None, folder: Path | None, output: Path) -> None:
    """Build a graph for a node set and save it as JSON."""
    from mll_index.index.graph import build_graph, save_graph

    g = build_graph(_node_set(node_set, wnids, folder))
    save_graph(g, output)
    click.echo(f"{output}: {len(g.nodes)} nodes over {len(g.wnids)} WordNet noun synsets")


@graph.command("show")
@click.argument("wnids", nargs=-1, required=True)
@_index_option
def graph_show(wnids: tuple[str, ...], index_path: Path | None) -> None:
    """Print nodes (lemmas, gloss, hypernym path, children) as JSON lines."""
    from mll_index.core.paths import default_index_path
    from mll_index.index.node_index import load_index_graph

    g = load_index_graph(index_path or default_index_path())
    for wnid in wnids:
        click.echo(json.dumps(g.describe(wnid), ensure_ascii=False))


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--file", "file", default=None, help="File of class names, one per line ('-' for stdin).")
@_with(_expander_options)
def expand(names: tuple[str, ...], file: str | None, **expander_args: object) -> None:
    """Print the captions an expander writes for class names, as JSON lines."""
    from mll_index.index.captions import Concept, clean_class_names

    expander = _expander(**expander_args)  # type: ignore[arg-type]
    classes = clean_class_names(_read_names(names, file))
    for name, captions in zip(classes, expander.expand([Concept(name=n) for n in classes])):
        click.echo(json.dumps({"query": name, "captions": captions}, ensure_ascii=False))


def _apply_recipe(recipe: Path | None, options: dict[str, object]) -> dict[str, object]:
    """Options from a recipe file (indexes/<name>.json); options given on the command line win."""
    if recipe is None:
        return options
    from mll_index.core.userfiles import read_user_json

    data = read_user_json(Path(recipe), "recipe file")
    if not isinstance(data, dict):
        raise InputError(f"{recipe}: a recipe is a JSON object of build options, got {type(data).__name__}")
    known = {"node_set", "wnids", "folder", "embedder", "search", "expander", "llm_url", "llm_model", "caption_file"}
    unknown = sorted(set(data) - known - {"description"})
    if unknown:
        raise InputError(f"{recipe}: unknown keys {unknown}; valid: {sorted(known)}")
    ctx = click.get_current_context()
    for key, value in data.items():
        if key in options and ctx.get_parameter_source(key) == click.core.ParameterSource.DEFAULT:
            options[key] = Path(value) if key in ("folder", "caption_file") else value
    return options


@cli.command()
@_index_option
@click.option("--recipe", type=click.Path(path_type=Path), default=None,
              help="JSON recipe (like indexes/default.json) giving the options below.")
@_with(_node_set_options)
@click.option("--embedder", default="minilm", show_default=True,
              help="minilm (fp32, ONNX Runtime) | minilm@fp32/torch | minilm@bf16 | st:<model>[@fp32|@bf16] | "
                   "openai:<base url>#<model>.")
@click.option("--search", type=click.Choice(["flat", "ivf"]), default="flat", show_default=True,
              help="Exact (flat) or approximate (ivf) FAISS search.")
@_with(_expander_options)
def build(index_path: Path | None, recipe: Path | None, **options: object) -> None:
    """Build a node index: graph, node captions, embeddings and FAISS index (written atomically)."""
    from mll_index.index.embed import load_embedder
    from mll_index.index.graph import build_graph
    from mll_index.index.node_index import build_index
    from mll_index.core.paths import default_index_path

    o = _apply_recipe(recipe, options)
    path = index_path or (recipe.with_suffix("") if recipe else default_index_path())
    nodes = _node_set(o["node_set"], o["wnids"], o["folder"])  # type: ignore[arg-type]
    # Models and endpoints first: they fail fast, the graph takes seconds.
    expander = _expander(o["expander"], o["llm_url"], o["llm_model"], o["llm_key_env"], o["caption_file"])  # type: ignore[arg-type]
    embedder = load_embedder(o["embedder"])  # type: ignore[arg-type]
    g = build_graph(nodes)
    index = build_index(path, g, embedder, expander=expander,  # type: ignore[arg-type]
                        search=o["search"], progress=True)  # type: ignore[arg-type]
    click.echo(f"{path}: {index.size} nodes, embedder {index.embedder_id} ({index.embedder.precision}), "
               f"{index.manifest['search']} search")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--file", "file", default=None, help="File of class names, one per line ('-' for stdin).")
@_index_option
@click.option("-k", "--top", "k", default=5, show_default=True, type=click.IntRange(1, 1000), help="Nodes per name.")
@click.option("--method", type=click.Choice(["combined", "captions", "name", "lemma"]), default="combined",
              show_default=True, help="Matching method.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
@_with(_expander_options)
def match(names: tuple[str, ...], file: str | None, index_path: Path | None, k: int, method: str, fmt: str,
          **expander_args: object) -> None:
    """Match class names (arguments, --file, or stdin) to their top-k graph nodes."""
    from mll_index.index.embed import LazyEmbedder
    from mll_index.index.match import Matcher, is_weak, match_names

    classes = _read_names(names, file)
    index = _open_index(index_path)
    embedder = None if method == "lemma" else LazyEmbedder(index.embedder)
    matcher = Matcher(index)
    results = match_names(index, classes, embedder, k=k, method=method,  # type: ignore[arg-type]
                          expander=_expander(**expander_args),  # type: ignore[arg-type]
                          cache=_embedding_cache(), matcher=matcher)
    for name, matches in zip(classes, results):
        weak = method != "lemma" and is_weak(matcher, name, matches[0].score if matches else None)
        if weak:
            best = matches[0] if matches else None
            click.echo(f"mll-index: warning: {name!r} matches no node well (best {best.synset if best else 'none'}, "
                       f"score {best.score if best else 'n/a'})", err=True)
        if fmt == "jsonl":
            click.echo(json.dumps({"query": name, "matches": [m.to_dict() for m in matches], "low_confidence": weak},
                                  ensure_ascii=False))
        else:
            click.echo(name + ("  (low confidence)" if weak else ""))
            for m in matches:
                click.echo(f"  {m.score:7.3f}  {m.wnid}  {m.synset}{'  (lemma)' if m.lemma_match else ''}")
            if not matches:
                click.echo("  (no match)")


@cli.group()
def hub() -> None:
    """Inspect model hubs (built-in ones, or hub files)."""


@hub.command("list")
def hub_list() -> None:
    """List the built-in hubs."""
    from mll_index.models.hub import builtin_hubs, load_hub

    for name in builtin_hubs():
        click.echo(f"{name}\t{len(load_hub(name, validate=False))} models")


@hub.command("show")
@click.argument("source")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
def hub_show(source: str, fmt: str) -> None:
    """Check a hub (built-in name or file) and list its models."""
    from mll_index.models.hub import load_hub

    h = load_hub(source)
    for m in h:
        if fmt == "jsonl":
            click.echo(json.dumps(m.describe()))
        else:
            acc = "-" if m.imagenet_acc is None else f"{m.imagenet_acc:.3f}"
            click.echo(f"{m.id:45s} {m.weights:50s} imagenet {acc}")


@hub.command("flops")
@click.argument("hub_file", type=click.Path(path_type=Path))
def hub_flops(hub_file: Path) -> None:
    """Measure the GFLOPs and parameters of the models that lack them and write them into HUB_FILE."""
    from mll_index.models.flops import fill_hub_flops

    for model, cost in fill_hub_flops(hub_file).items():
        gflops = "unknown" if cost.gflops is None else f"{cost.gflops:g}"
        params = "unknown" if cost.params_m is None else f"{cost.params_m:g}"
        click.echo(f"{model}\t{gflops} GFLOPs\t{params} M params")


def _workers_option(f: Any) -> Any:
    return click.option("--workers", default=0, show_default=True, type=click.IntRange(0, 256),
                        help="Processes decoding images ahead of the models (0: decode in this process).")(f)


def _echo_rates(stats: list[Any]) -> None:
    """The decode and encode rates on stderr, so a user sees which one bounds the run."""
    if stats:
        from mll_index.images.encoding import rates_line

        click.echo(f"mll-index: {rates_line(stats)}", err=True)


def _echo_unreadable(paths: list[str], reasons: dict[str, str], root: Path, shown: int = 20) -> None:
    """One warning line per skipped image (the first `shown`), naming the file and why."""
    click.echo(f"mll-index: warning: skipped {len(paths)} unreadable image(s) in {root}:", err=True)
    for rel in paths[:shown]:
        click.echo(f"  {rel}: {reasons.get(rel, 'cannot be decoded')}", err=True)
    if len(paths) > shown:
        click.echo(f"  ... and {len(paths) - shown} more", err=True)


@cli.command()
@_index_option
@click.option("--hub", "hub_source", required=True, help="Built-in hub name (mll49) or hub file (JSON or CSV).")
@click.option("--samples", type=click.Path(path_type=Path), required=True,
              help="Sample dataset root/<wnid>/*.jpg.")
@click.option("--model", "models", multiple=True, help="Label only these model ids (repeatable).")
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda if available].")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1, 65536))
@_workers_option
@click.option("--pixel-cache", is_flag=True, help="Keep the decoded images at each model input resolution (uint8, "
              "under labels/.pixels) so a later labeling run skips decoding; its size is printed first, and it is "
              "refused when the disk cannot hold it.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Label on a Ray cluster: auto (RAY_ADDRESS, else the cluster this machine is part of), local (a "
              "cluster of this machine's CPUs, started for this run), HOST:PORT or ray://HOST:PORT. Needs "
              "`pip install 'mll-index[cluster]'` and the sample folder at the same path on every node.")
@click.option("--ray-gpus", type=click.FloatRange(0, 64), default=None,
              help="With --ray: GPUs per task (fractions share a GPU) [default: 1 when the cluster has GPUs, else 0].")
@click.option("--ray-cpus", type=click.FloatRange(0.01, 1024), default=1.0, show_default=True,
              help="With --ray: CPUs per task (also its torch threads).")
@click.option("--shard-images", type=click.IntRange(1, 10_000_000), default=None,
              help="With --ray: sample images per task [default: 16 batches].")
def label(index_path: Path | None, hub_source: str, samples: Path, models: tuple[str, ...], device: str | None,
          batch_size: int, workers: int, pixel_cache: bool, ray_address: str | None, ray_gpus: float | None,
          ray_cpus: float, shard_images: int | None) -> None:
    """Label every hub model not yet labeled on these samples (resumable; only what is new is encoded)."""
    from mll_index.models.hub import load_hub
    from mll_index.core.paths import default_index_path
    from mll_index.labeling.run import label_models

    path = index_path or default_index_path()
    if not path.exists():
        raise InputError(f"{path}: no index here; build one with `mll-index build --index {path}`")
    if ray_address is None and (ray_gpus is not None or shard_images is not None):
        raise click.UsageError("--ray-gpus and --shard-images go with --ray ADDRESS")
    if ray_address is not None:
        if pixel_cache or device:
            raise click.UsageError("--pixel-cache and --device are single-machine options; with --ray each task "
                                   "decodes its shard and runs on the GPU Ray gives it (--ray-gpus)")
        _label_on_ray(path, hub_source, samples, list(models) or None, ray_address, ray_gpus, ray_cpus,
                      shard_images, batch_size, workers)
        return
    report = label_models(path, load_hub(hub_source), samples, models=list(models) or None, device=device,
                          batch_size=batch_size, progress=True, workers=workers, pixel_cache=pixel_cache,
                          notify=lambda line: click.echo(f"mll-index: {line}", err=True))
    _echo_label_report(report, samples, "images/s")
    _echo_rates(report.stats)
    if report.failed:
        sys.exit(1)


def _echo_label_report(report: Any, samples: Path, rate: str) -> None:
    """A labeling run's per-model lines (labeled, current, failed), unreadable images and skipped folders."""
    for model_id in report.labeled:
        click.echo(f"labeled  {model_id}  ({report.images_per_s[model_id]:.0f} {rate})")
    for model_id in report.skipped:
        click.echo(f"current  {model_id}")
    for model_id, why in report.failed.items():
        click.echo(f"failed   {model_id}: {why}", err=True)
    if report.unreadable:
        _echo_unreadable(report.unreadable, report.unreadable_reasons, samples)
    if report.skipped_folders:
        click.echo(f"skipped folders: {report.skipped_folders[:5]}", err=True)


def _label_on_ray(path: Path, hub_source: str, samples: Path, models: list[str] | None, address: str,
                  gpus: float | None, cpus: float, shard_images: int | None, batch_size: int, workers: int) -> None:
    """`label --ray`: the cluster run, its per-model lines, then where the time went (per worker and phase)."""
    from mll_index.cluster import label_on_ray
    from mll_index.cluster.connect import connect
    from mll_index.models.hub import load_hub

    connect(address)    # before reading the hub (which imports torch): a wrong address is named within seconds
    report = label_on_ray(path, load_hub(hub_source), samples, address=address, models=models, batch_size=batch_size,
                          shard_images=shard_images, gpus_per_task=gpus, cpus_per_task=cpus, decode_workers=workers,
                          progress=True, notify=lambda line: click.echo(f"mll-index: warning: {line}", err=True))
    _echo_label_report(report, samples, "images/s in the model")
    if report.workers:
        p = report.phases
        click.echo(f"mll-index: cluster {report.address}: {report.shards} tasks on {len(report.nodes)} node(s), "
                   f"{report.throughput():.0f} model-images/s overall in {p['wall_s']:.1f} s; summed over tasks: decoding "
                   f"{p['decode_s']:.1f} s, encoding {p['encode_s']:.1f} s, loading models {p['load_s']:.1f} s; "
                   f"writing labels {p['write_s']:.1f} s", err=True)
        for worker, w in sorted(report.workers.items()):
            click.echo(f"mll-index:   worker {worker}: {w['images']} model-images in {w['shards']} task(s), "
                       f"{w['images_per_s']:.0f}/s (decoding {w['decode_s']:.1f} s, encoding "
                       f"{w['encode_s']:.1f} s, loading {w['load_s']:.1f} s)", err=True)
    if report.failed:
        sys.exit(1)


@cli.command()
@_index_option
@click.option("--verify", is_flag=True, help="Also check every file's SHA-256 (node index, labels, label matrix, "
              "published labels).")
def info(index_path: Path | None, verify: bool) -> None:
    """Print an index's manifest after checking it; each damaged file is named on stderr (exit status 1)."""
    from mll_index.core.paths import default_index_path
    from mll_index.index.node_index import index_leftovers, load_index
    from mll_index.labels.matrix import matrix_counts
    from mll_index.verify import check_index

    path = index_path or default_index_path()
    problems = check_index(path, checksums=verify)
    out = None
    with contextlib.suppress(MLLIndexError):     # a damaged part is named among the problems
        out = dict(load_index(path).manifest)
        counts = matrix_counts(path)
        if counts:
            out["label_matrix"] = counts
        leftovers = index_leftovers(path)
        if leftovers["paths"]:      # what interrupted writes left; the next writer removes it
            out["leftovers"] = leftovers
    if out is not None:
        click.echo(json.dumps(out, indent=1))
    for problem in problems:      # one line per damaged file
        click.echo(f"mll-index: error: {problem}", err=True)
    if problems:
        sys.exit(1)


@cli.command("add-nodes")
@click.argument("wnids", nargs=-1)
@click.option("--file", "file", default=None, help="File with one wnid per line ('-' for stdin).")
@_index_option
def add_nodes_command(wnids: tuple[str, ...], file: str | None, index_path: Path | None) -> None:
    """Add WordNet synsets (wnids) to an index's node set; only the new nodes are embedded."""
    from mll_index.index.node_index import add_nodes
    from mll_index.core.paths import default_index_path

    report = add_nodes(index_path or default_index_path(), _read_names(wnids, file, "wnids"))
    click.echo(json.dumps({"added": len(report.added), "skipped_already_there": report.skipped,
                           "embed_seconds": round(report.embed_seconds, 2),
                           "write_seconds": round(report.write_seconds, 2)}, indent=1))


@cli.group()
def labels() -> None:
    """The label matrix: every model's counts on every labeled node."""


@labels.command("compact")
@_index_option
def labels_compact(index_path: Path | None) -> None:
    """Store label folders the matrix lacks, merge its shards into one, and stack every model's top nodes
    per sample set (the restricted mode reads them together)."""
    from mll_index.core.paths import default_index_path
    from mll_index.labels.matrix import compact_matrix, has_matrix
    from mll_index.labels.sync import sync_matrix
    from mll_index.labels.topk_table import write_topk_tables

    path = index_path or default_index_path()
    added = sync_matrix(path)
    report = compact_matrix(path) if has_matrix(path) else {}
    click.echo(json.dumps({"stored_from_folders": added, **report, "topk_tables": write_topk_tables(path)}, indent=1))


def _read_task(names: tuple[str, ...], file: str | None, task_file: Path | None):  # type: ignore[no-untyped-def]
    from mll_index.selection.task import make_task, read_task_file

    if task_file is not None:
        if names or file:
            raise InputError("give the task as class names, --file or --task, not several")
        return read_task_file(task_file)
    return make_task(_read_names(names, file))


def _selection_options(f):  # type: ignore[no-untyped-def]
    for option in reversed([
        click.option("-k", "k", default=1, show_default=True, type=click.IntRange(1, 1000), help="Models per class."),
        click.option("--alpha", default=0.7, show_default=True, type=click.FloatRange(0, 1),
                     help="Weight of the class's own F1 against the task's other classes."),
        click.option("--nodes", "n_nodes", default=5, show_default=True, type=click.IntRange(1, 1000),
                     help="Labeled nodes matched per class."),
        click.option("--mode", type=click.Choice(["auto", "restricted", "counts"]), default="auto", show_default=True,
                     help="restricted: confusion recomputed among the task's nodes from image-level labels; "
                          "counts: the label matrix's stored counts; auto: restricted while it is cheap "
                          "(image-level labels, a small hub), counts beyond."),
    ]):
        f = option(f)
    return f


def _warn_weak(selection, prompts: bool = True) -> None:  # type: ignore[no-untyped-def]
    from mll_index.selection.answer import answer_warning_lines

    # (reuse checks the prompts itself, with each model's own tokenizer: prompts=False there)
    for line in answer_warning_lines(selection.to_dict(), prompts):
        click.echo(line, err=True)


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--file", "file", default=None, help="File of class names, one per line ('-' for stdin).")
@click.option("--task", "task_file", type=click.Path(path_type=Path), default=None,
              help="A task file: JSON (classes, optional captions, domain, description) or one name per line.")
@click.option("--batch", "batch", type=click.Path(path_type=Path), default=None,
              help="JSONL of tasks, one per line; writes JSONL selections (to --out or stdout).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None, help="Write the output here.")
@_index_option
@_selection_options
@click.option("--domain", default=None, help="The task's image domain (e.g. sketch): only sample images tagged "
              "with it count, where there are such.")
@click.option("--explain", is_flag=True, help="Show why each model won (F1, counts, smoothing).")
@click.option("--ranking", "ranking_size", default=100, show_default=True, type=click.IntRange(0),
              help="Models listed in the task-level ranking (0: all).")
@click.option("--images", "probe_images", type=click.Path(path_type=Path), default=None,
              help="A folder of a few unlabeled images of the task: sample images like them count most "
                   "(restricted mode; one labeled model encodes them).")
@click.option("--probe", default=16, show_default=True, type=click.IntRange(0),
              help="Probe images of --images (or the task's probe_images) used at most (0: ignore them).")
@click.option("--server", default=None, metavar="URL", help="Ask a running `mll-index serve` at URL instead of "
              "opening the index here (bearer token from $MLL_INDEX_API_KEY).")
@click.option("--max-gflops", type=_PositiveFinite(0, min_open=True), default=None,
              help="Only models of at most this many GFLOPs per image.")
@click.option("--max-params", type=_PositiveFinite(0, min_open=True), default=None,
              help="Only models of at most this many million parameters.")
@click.option("--budget-gflops", type=_PositiveFinite(0, min_open=True), default=None,
              help="The ensemble's GFLOPs per image (the sum over its distinct models) at most this.")
@click.option("--pareto", is_flag=True, help="Also list the non-dominated (predicted accuracy, GFLOPs) choices.")
@click.option("--labels", "label_source", type=click.Choice(["auto", "image", "published", "both"]), default="auto",
              show_default=True, help="Labels that rank the models: image-based, published, both merged by rank, or "
              "auto (every source the index holds; warns when the two share few models).")
def select(names: tuple[str, ...], file: str | None, task_file: Path | None, batch: Path | None, out: Path | None,
           index_path: Path | None, k: int, alpha: float, n_nodes: int, mode: str, domain: str | None,
           explain: bool, ranking_size: int, probe_images: Path | None, probe: int, server: str | None,
           max_gflops: float | None, max_params: float | None, budget_gflops: float | None, pareto: bool,
           label_source: str) -> None:
    """Choose the top-k models per class for a task, from the index's labels."""
    from mll_index.selection.budget import Budget

    budget = Budget(max_gflops, max_params, budget_gflops)
    if server is not None and (budget.active or pareto):
        raise InputError("budgets and --pareto are answered by a local index; drop --server or the budget")
    if server is not None:
        # Before any other import: this path loads no numpy-heavy module, no text runtime.
        from mll_index.service.client import remote_select

        if index_path is not None:
            raise InputError("give --server or --index, not both (the service has its own index)")
        if probe_images is not None:
            raise InputError("--images is read where the index is: give the folder in the task file's "
                             "\"probe_images\" (a path the server can read) with --server")
        text, warnings = remote_select(server, None if (task_file or batch) else _read_names(names, file),
                                       task_file, batch, bool(names or file), k=k, alpha=alpha, nodes=n_nodes,
                                       mode=mode, domain=domain, explain=explain, ranking=ranking_size,
                                       labels=label_source)
        for line in warnings:
            click.echo(line, err=True)
        if out:
            from mll_index.core.artifacts import atomic_file

            with atomic_file(out) as handle:
                handle.write(text)
        else:
            click.echo(text, nl=False)
        return
    from mll_index.core.artifacts import atomic_file
    from mll_index.core.paths import default_index_path
    from mll_index.selection.answer import answer_tasks, answer_warning_lines
    from mll_index.selection.settings import SelectionSettings
    from mll_index.selection.selector import open_selector
    from mll_index.selection.task import read_batch_file

    path = index_path or default_index_path()
    if batch is not None:
        if names or file or task_file:
            raise InputError("--batch takes the tasks from its file; give no class names, --file or --task")
        tasks = read_batch_file(batch)
    else:
        tasks = [_read_task(names, file, task_file)]
    if domain or probe_images:
        from dataclasses import replace

        tasks = [replace(t, domain=domain or t.domain,
                         probe_images=(str(probe_images),) if probe_images else t.probe_images) for t in tasks]
    settings = SelectionSettings(k=k, alpha=alpha, n_nodes=n_nodes, mode=mode, explain=explain,  # type: ignore[arg-type]
                                 ranking_size=ranking_size or None, probe=probe, labels=label_source)  # type: ignore[arg-type]
    answers = answer_tasks(open_selector(path, cache=_embedding_cache()), tasks, settings, budget=budget, pareto=pareto)
    # An index-wide line stands in every answer of a batch: printed once.
    for line in dict.fromkeys(line for answer in answers for line in answer_warning_lines(answer)):
        click.echo(line, err=True)
    if batch is not None:
        text = "".join(json.dumps(a) + "\n" for a in answers)
    else:
        text = json.dumps(answers[0], indent=1) + "\n"
    if out:
        with atomic_file(out) as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


@cli.command()
@_index_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (127.0.0.1: this machine only).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes, each holding the index open.")
@click.option("--api-key-env", default=None, metavar="NAME",
              help="Require the bearer token held by environment variable NAME on every route but /healthz.")
def serve(index_path: Path | None, host: str, port: int, workers: int, api_key_env: str | None) -> None:
    """Serve selection over HTTP (OpenAPI at /docs); new index versions are picked up without a restart."""
    from mll_index.core.paths import default_index_path
    from mll_index.service.server import serve as run_service

    run_service(index_path or default_index_path(), host=host, port=port, workers=workers, api_key_env=api_key_env)


@cli.command()
@click.argument("images", type=click.Path(path_type=Path))
@click.option("--hub", "hub_source", required=True, help="Built-in hub name or hub file.")
@click.option("--selection", "selection_file", type=click.Path(path_type=Path), default=None,
              help="A selection written by `mll-index select` (else the task is selected here).")
@click.option("--names", "names_csv", default=None, help="Class names, comma-separated (to select here).")
@click.option("--task", "task_file", type=click.Path(path_type=Path), default=None, help="A task file (to select here).")
@_index_option
@_selection_options
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Predictions file [default: print a summary only].")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--device", default=None, help="cpu, cuda, ... [default: cuda if available].")
@click.option("--force", is_flag=True, help="Predict even where a model's tokenizer cuts a class name or makes two "
              "classes' prompts identical (each such model is reported).")
@_workers_option
def reuse(images: Path, hub_source: str, selection_file: Path | None, names_csv: str | None, task_file: Path | None,
          index_path: Path | None, k: int, alpha: float, n_nodes: int, mode: str, out: Path | None, fmt: str,
          device: str | None, force: bool, workers: int) -> None:
    """Predict a task's images with the selected models, combined per class by inverse entropy.

    IMAGES is a flat folder of images, or one subfolder per class name (then accuracy is reported).
    """
    from mll_index.models.hub import load_hub
    from mll_index.core.paths import default_index_path
    from mll_index.models.zeroshot import lemma_of
    from mll_index.reuse.ensemble import reuse_models, write_predictions
    from mll_index.selection.settings import SelectionSettings
    from mll_index.selection.task import make_task
    from mll_index.selection.selector import open_selector, select_models

    hub = load_hub(hub_source, validate=False)
    if selection_file is not None:
        if names_csv or task_file:
            raise InputError("give --selection or a task (--names / --task), not both")
        from mll_index.core.userfiles import read_user_json

        data = read_user_json(selection_file, "selection file")
        try:
            models = {c["name"]: [m["model"] for m in c["models"]] for c in data["classes"]}
            lemmas = {c["name"]: lemma_of(c["nodes"][0]["synset"]) for c in data["classes"] if c.get("nodes")}
            name = data.get("task", "task")
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{selection_file}: not a selection written by `mll-index select` ({exc})") from None
    else:
        if names_csv:
            task = make_task([n for n in names_csv.split(",") if n.strip()] if names_csv.strip() else [])
        elif task_file:
            task = _read_task((), None, task_file)
        else:
            raise InputError("give --selection, --names or --task")
        settings = SelectionSettings(k=k, alpha=alpha, n_nodes=n_nodes, mode=mode)  # type: ignore[arg-type]
        selection = select_models(open_selector(index_path or default_index_path(), cache=_embedding_cache()), task,
                                  settings)
        _warn_weak(selection, prompts=False)
        models, name = selection.models_for(), task.name
        lemmas = {c.name: lemma_of(c.nodes[0].synset) for c in selection.classes if c.nodes}
    result = reuse_models(hub, models, images, task=name, device=device, progress=True, lemmas=lemmas, force=force,
                          workers=workers)
    for line in result.warnings:
        click.echo(f"mll-index: warning: {line}", err=True)
    if out:
        write_predictions(result, out, fmt)
    if result.images.unreadable:
        _echo_unreadable(result.images.unreadable, result.images.reasons, images)
    _echo_rates(result.stats)
    click.echo(json.dumps(result.summary(), indent=1))


@cli.command()
@_index_option
@click.option("--hub", "hub_source", default=None, help="Hub file [default: the emoji world's].")
@click.option("--tasks-dir", type=click.Path(path_type=Path), default=None,
              help="Folder of tasks, each an ImageFolder by class name [default: the emoji world's tasks].")
@click.option("--world-size", type=click.Choice(["full", "small"]), default="full", show_default=True)
@click.option("--world-root", type=click.Path(path_type=Path), default=None)
@click.option("--alpha", default=0.7, show_default=True, type=click.FloatRange(0, 1))
@click.option("--mode", type=click.Choice(["restricted", "counts"]), default="restricted", show_default=True,
              help="Selection mode scored (the emoji world's hub has image-level labels).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("evaluation"), show_default=True,
              help="Folder for evaluation.{md,csv,json,png}.")
@_workers_option
def evaluate(index_path: Path | None, hub_source: str | None, tasks_dir: Path | None, world_size: str,
             world_root: Path | None, alpha: float, mode: str, out: Path, workers: int) -> None:
    """MLL against INB, random, text-proxy and oracle baselines on tasks with ground truth."""
    from mll_index.evaluation.run import EvalTask, evaluate_tasks, world_eval_tasks, write_evaluation
    from mll_index.models.hub import load_hub
    from mll_index.core.paths import default_index_path
    from mll_index.selection.selector import open_selector
    from mll_index.world import load_world

    world_obj = None
    if tasks_dir is None or hub_source is None:
        world_obj = load_world(world_size, world_root)
    hub = load_hub(hub_source, validate=False) if hub_source else load_hub(world_obj.hub_path)
    if tasks_dir is not None:
        if not tasks_dir.is_dir():
            raise InputError(f"{tasks_dir}: no such folder")
        tasks = [EvalTask(d.name, tuple(sorted(p.name for p in d.iterdir() if p.is_dir())), d)
                 for d in sorted(tasks_dir.iterdir()) if d.is_dir()]
    else:
        tasks = world_eval_tasks(world_obj)
    from mll_index.labels.matrix import has_matrix
    from mll_index.labels.folders import labeled_models

    path = index_path or default_index_path()
    # An index with published labels only is evaluated on those (naming models would ask for image labels).
    image_labels = path.is_dir() and (bool(labeled_models(path)) or has_matrix(path))
    selector = open_selector(path, models=list(hub.ids) if image_labels else None, cache=_embedding_cache())
    result = evaluate_tasks(selector, hub, tasks, alpha=alpha, mode=mode, progress=True, workers=workers)
    _echo_rates(result.stats)
    files = write_evaluation(result, out)
    from mll_index.evaluation.cost import plot_accuracy_gflops
    from mll_index.models.flops import model_costs

    files["gflops_png"] = out / "evaluation_gflops.png"
    plot_accuracy_gflops(result.mean, result.chosen, model_costs(list(hub)), files["gflops_png"])
    click.echo(result.table())
    click.echo(f"written: {', '.join(str(p) for p in files.values())}")


@cli.command()
@_index_option
@click.option("--size", type=click.Choice(["full", "small"]), default="full", show_default=True,
              help="The emoji world to run on.")
@click.option("--world-root", type=click.Path(path_type=Path), default=None)
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("demo-results"), show_default=True)
@click.option("--device", default=None, help="cpu, cuda, ... [default: cuda if available].")
def demo(index_path: Path | None, size: str, world_root: Path | None, out: Path, device: str | None) -> None:
    """The whole paradigm on the emoji world: build, label, select, reuse, compare with the baselines."""
    from mll_index.world.demo import run_demo
    from mll_index.core.paths import default_index_path

    result = run_demo(index_path or default_index_path(), out, size=size, world_root=world_root, device=device,
                      progress=True)
    click.echo(result.evaluation.table())
    click.echo(f"seconds: {result.seconds}")
    click.echo(f"written: {', '.join(str(p) for p in result.files.values())}")


@cli.group()
def published() -> None:
    """Labels from published benchmark results (a results table and class-name lists)."""


@published.command("import")
@_index_option
@click.option("--results", type=click.Path(path_type=Path), required=True,
              help="Results CSV: open_clip's (name, pretrained, params (M), FLOPs (B), one column per dataset) or "
                   "LOVM's (one row per model and dataset: dataset, model_fullname or model + pretrained, acc1).")
@click.option("--classnames", "classnames", type=click.Path(path_type=Path), multiple=True, required=True,
              help="Class names: a JSON file {dataset key: [names]} or a folder of <key>.txt (repeatable).")
@click.option("--mapping", type=click.Path(path_type=Path), default=None,
              help="Which class-name key each column uses [default: the shipped published_datasets.json].")
@click.option("--domains", type=click.Path(path_type=Path), default=None,
              help="JSON {dataset: domain} (LOVM's dataset_domains.json), matched against a task's domain.")
@click.option("--descriptions", type=click.Path(path_type=Path), default=None,
              help="JSON {dataset: task description} (LOVM's dataset_tasks.json), matched against a task's description.")
@click.option("--scale", type=click.Choice(["auto", "percent", "fraction"]), default="auto", show_default=True,
              help="The table's figures: percentages, fractions, or auto (percent when any figure is above 1).")
def published_import(index_path: Path | None, results: Path, classnames: tuple[Path, ...], mapping: Path | None,
                     domains: Path | None, descriptions: Path | None, scale: str) -> None:
    """Import published results as coarse labels of the index (replaces earlier published labels)."""
    from mll_index.core.paths import default_index_path
    from mll_index.published.store import import_published

    summary = import_published(index_path or default_index_path(), results, list(classnames), mapping=mapping,
                               domains=domains, descriptions=descriptions, scale=scale)  # type: ignore[arg-type]
    click.echo(json.dumps(summary, indent=1))


@cli.group()
def world() -> None:
    """The emoji world: a real multi-domain corpus, a trained hub and target tasks, built offline."""


def _world_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--root", type=click.Path(path_type=Path), default=None,
                     help="World directory [default: <cache>/world/<size>].")(f)
    return click.option("--size", type=click.Choice(["full", "small"]), default="full", show_default=True,
                        help="full: the demo's world; small: a few tasks and 3 models, for tests.")(f)


def _accuracy_table(accuracy: dict[str, dict[str, float]]) -> str:
    tasks = list(next(iter(accuracy.values())))
    width = max(len(m) for m in accuracy)
    lines = [f"{'model':<{width}}  " + "  ".join(f"{t[:12]:>12}" for t in tasks)]
    for model, row in accuracy.items():
        lines.append(f"{model:<{width}}  " + "  ".join(f"{row[t]:>12.3f}" for t in tasks))
    best = {t: max(accuracy, key=lambda m: accuracy[m][t]) for t in tasks}
    lines.append(f"{'best':<{width}}  " + "  ".join(f"{best[t][:12]:>12}" for t in tasks))
    return "\n".join(lines)


@world.command("fetch")
def world_fetch() -> None:
    """Fetch the emoji art packages from the npm registry (once; set-up runs this)."""
    from mll_index.world import fetch_world_art

    for package, path in fetch_world_art().items():
        click.echo(f"{package}: {path}")


@world.command("build")
@_world_options
@click.option("--tasks", "task_file", type=click.Path(path_type=Path), default=None,
              help="Task definitions (JSON) [default: the shipped emoji_tasks.json].")
@click.option("--rebuild", is_flag=True, help="Build even if an up-to-date world is there.")
@click.option("--retrain", is_flag=True,
              help="Train every hub model from its spec instead of using the shipped weights, and say whether "
                   "each equals them.")
@click.option("--ship-weights", "ship_to", type=click.Path(path_type=Path), default=None,
              help="Then write the hub's compact weights into this folder (maintainers: mll_index/data/emoji_weights).")
def world_build(size: str, root: Path | None, task_file: Path | None, rebuild: bool, retrain: bool,
                ship_to: Path | None) -> None:
    """Build the emoji world (or load it from the cache) and print its accuracy table."""
    from mll_index.world import build_world
    from mll_index.world.build import ship_world_weights

    built = build_world(size, root, task_file=task_file, progress=True, rebuild=rebuild, retrain=retrain)
    m = built.manifest
    click.echo(f"emoji world at {built.root}: {m['concepts']} concepts, {len(m['domains'])} domains, "
               f"{sum(m['images'].values())} images {m['images']}, {len(m['models'])} models")
    origin = {model: info.get("trained") for model, info in m["models"].items()}
    click.echo(f"hub weights: {origin}")
    compared = {model: info["equals_shipped"] for model, info in m["models"].items() if "equals_shipped" in info}
    if compared:
        click.echo(f"retrained weights equal to the shipped ones: {sum(compared.values())} of {len(compared)} "
                   f"{compared}")
    if ship_to is not None:
        shipped = ship_world_weights(built, ship_to)
        click.echo(f"wrote {len(shipped['models'])} compact checkpoints to {ship_to}")
    click.echo(_accuracy_table(built.accuracy))


@world.command("tasks")
@_world_options
@click.option("--generate", "n", required=True, type=click.IntRange(1, 100000), help="Tasks to draw.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (task names carry it).")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=None,
              help="Write the task file here [default: stdout]; `world build --tasks` takes it.")
def world_tasks(size: str, root: Path | None, n: int, seed: int, out: Path | None) -> None:
    """Draw N tasks from a built world's concepts and domains (10-60 classes named by their lemma)."""
    from mll_index.world.generate import generate_world_tasks

    text = json.dumps(generate_world_tasks(size, root, n, seed), indent=1, ensure_ascii=False) + "\n"
    if out:
        from mll_index.core.artifacts import atomic_file

        with atomic_file(out) as handle:
            handle.write(text)
    else:
        click.echo(text, nl=False)


@world.command("show")
@_world_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def world_show(size: str, root: Path | None, fmt: str) -> None:
    """Print a built world's counts, tasks and accuracy table (general benchmark and every task)."""
    from mll_index.world import load_world

    built = load_world(size, root)
    if fmt == "json":
        click.echo(json.dumps({"root": str(built.root), "manifest": built.manifest, "accuracy": built.accuracy,
                               "tasks": {t.name: t.class_names for t in built.tasks}}, indent=1))
        return
    m = built.manifest
    click.echo(f"emoji world at {built.root}: {m['concepts']} concepts, domains {m['domains']}")
    click.echo(f"images per pool: {m['images']}")
    for t in built.tasks:
        click.echo(f"task {t.name}: {len(t.classes)} classes, domains {list(t.domains)}, "
                   f"{m['task_images'][t.name]} images")
    click.echo(_accuracy_table(built.accuracy))


def main() -> None:
    """Entry point: a user's mistake is one line on stderr and exit status 1, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line like every other mistake; click's own four-line usage block buries the cause.
        where = f"{exc.ctx.command_path} --help" if exc.ctx is not None else "mll-index --help"
        click.echo(f"mll-index: error: {exc.format_message()} (see '{where}')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"mll-index: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except MLLIndexError as exc:
        click.echo(f"mll-index: error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        click.echo(f"mll-index: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
