"""The node index's commands: graph build/show, expand, build, match, info, add-nodes, labels compact."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from mll_index.cli.options import embedding_cache, index_option, open_index, read_names, with_options
from mll_index.errors import InputError, MLLIndexError


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


@click.group()
def graph() -> None:
    """Build and inspect the semantic graph (WordNet 3.0 nouns)."""


@graph.command("build")
@with_options(_node_set_options)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Graph JSON file to write.")
def graph_build(node_set: str, wnids: str | None, folder: Path | None, output: Path) -> None:
    """Build a graph for a node set and save it as JSON."""
    from mll_index.index.graph import build_graph, save_graph

    g = build_graph(_node_set(node_set, wnids, folder))
    save_graph(g, output)
    click.echo(f"{output}: {len(g.nodes)} nodes over {len(g.wnids)} WordNet noun synsets")


@graph.command("show")
@click.argument("wnids", nargs=-1, required=True)
@index_option
def graph_show(wnids: tuple[str, ...], index_path: Path | None) -> None:
    """Print nodes (lemmas, gloss, hypernym path, children) as JSON lines."""
    from mll_index.core.paths import default_index_path
    from mll_index.index.node_index import load_index_graph

    g = load_index_graph(index_path or default_index_path())
    for wnid in wnids:
        click.echo(json.dumps(g.describe(wnid), ensure_ascii=False))


@click.command()
@click.argument("names", nargs=-1)
@click.option("--file", "file", default=None, help="File of class names, one per line ('-' for stdin).")
@with_options(_expander_options)
def expand(names: tuple[str, ...], file: str | None, **expander_args: object) -> None:
    """Print the captions an expander writes for class names, as JSON lines."""
    from mll_index.index.captions import Concept, clean_class_names

    expander = _expander(**expander_args)  # type: ignore[arg-type]
    classes = clean_class_names(read_names(names, file))
    for name, captions in zip(classes, expander.expand([Concept(name=n) for n in classes])):
        click.echo(json.dumps({"query": name, "captions": captions}, ensure_ascii=False))


def _apply_recipe(recipe: Path | None, options: dict[str, object]) -> dict[str, object]:
    """Options from a recipe file (indexes/<name>.json); options given on the command line win."""
    if recipe is None:
        return options
    from mll_index.index.recipe import read_recipe

    ctx = click.get_current_context()
    for key, value in read_recipe(recipe).items():
        if key in options and ctx.get_parameter_source(key) == click.core.ParameterSource.DEFAULT:
            options[key] = value
    return options


@click.command()
@index_option
@click.option("--recipe", type=click.Path(path_type=Path), default=None,
              help="JSON recipe (like indexes/default.json) giving the options below.")
@with_options(_node_set_options)
@click.option("--embedder", default="minilm", show_default=True,
              help="minilm (fp32, ONNX Runtime) | minilm@fp32/torch | minilm@bf16 | st:<model>[@fp32|@bf16] | "
                   "openai:<base url>#<model>.")
@click.option("--search", type=click.Choice(["flat", "ivf"]), default="flat", show_default=True,
              help="Exact (flat) or approximate (ivf) FAISS search.")
@with_options(_expander_options)
def build(index_path: Path | None, recipe: Path | None, **options: object) -> None:
    """Build a node index: graph, node captions, embeddings and FAISS index (written atomically)."""
    from mll_index.core.paths import default_index_path
    from mll_index.index.embed import load_embedder
    from mll_index.index.graph import build_graph
    from mll_index.index.node_index import build_index

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


@click.command()
@click.argument("names", nargs=-1)
@click.option("--file", "file", default=None, help="File of class names, one per line ('-' for stdin).")
@index_option
@click.option("-k", "--top", "k", default=5, show_default=True, type=click.IntRange(1, 1000), help="Nodes per name.")
@click.option("--method", type=click.Choice(["combined", "captions", "name", "lemma"]), default="combined",
              show_default=True, help="Matching method.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table", show_default=True)
@with_options(_expander_options)
def match(names: tuple[str, ...], file: str | None, index_path: Path | None, k: int, method: str, fmt: str,
          **expander_args: object) -> None:
    """Match class names (arguments, --file, or stdin) to their top-k graph nodes."""
    from mll_index.index.embed import LazyEmbedder
    from mll_index.index.match import Matcher, is_weak, match_names

    classes = read_names(names, file)
    index = open_index(index_path)
    embedder = None if method == "lemma" else LazyEmbedder(index.embedder)
    matcher = Matcher(index)
    results = match_names(index, classes, embedder, k=k, method=method,  # type: ignore[arg-type]
                          expander=_expander(**expander_args),  # type: ignore[arg-type]
                          cache=embedding_cache(), matcher=matcher)
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


@click.command()
@index_option
@click.option("--verify", is_flag=True, help="Also check every file's SHA-256 (node index, labels, label matrix, "
              "published labels, selection rule).")
def info(index_path: Path | None, verify: bool) -> None:
    """Print an index's manifest after checking it; each damaged file is named on stderr (exit status 1)."""
    from mll_index.core.paths import default_index_path
    from mll_index.index.node_index import index_leftovers, load_index
    from mll_index.labels.matrix import matrix_counts
    from mll_index.selection.calibrated_rule import check_rule, rule_summary
    from mll_index.verify import check_index

    path = index_path or default_index_path()
    problems = check_index(path, checksums=verify) + check_rule(path, checksums=verify)
    out = None
    with contextlib.suppress(MLLIndexError):     # a damaged part is named among the problems
        out = dict(load_index(path).manifest)
        counts = matrix_counts(path)
        if counts:
            out["label_matrix"] = counts
        out.update(_label_summary(path))   # what the index can select among: labeled models, published labels
        rule = rule_summary(path)
        if rule is not None:            # what `mll-index calibrate` fitted, and how it did on held-out pseudo-tasks
            out["selection_rule"] = rule
        leftovers = index_leftovers(path)
        if leftovers["paths"]:      # what interrupted writes left; the next writer removes it
            out["leftovers"] = leftovers
    if out is not None:
        click.echo(json.dumps(out, indent=1))
    if verify and out is not None:
        from mll_index.verify import unchecked_parts

        for part in unchecked_parts(path):   # written by an older version without a checksum: not an error
            click.echo(f"mll-index: warning: {part}", err=True)
    for problem in problems:      # one line per damaged file
        click.echo(f"mll-index: error: {problem}", err=True)
    if problems:
        sys.exit(1)


@click.command("add-nodes")
@click.argument("wnids", nargs=-1)
@click.option("--file", "file", default=None, help="File with one wnid per line ('-' for stdin).")
@index_option
def add_nodes_command(wnids: tuple[str, ...], file: str | None, index_path: Path | None) -> None:
    """Add WordNet synsets (wnids) to an index's node set; only the new nodes are embedded."""
    from mll_index.core.paths import default_index_path
    from mll_index.index.node_index import add_nodes

    report = add_nodes(index_path or default_index_path(), read_names(wnids, file, "wnids"))
    click.echo(json.dumps({"added": len(report.added), "skipped_already_there": report.skipped,
                           "embed_seconds": round(report.embed_seconds, 2),
                           "write_seconds": round(report.write_seconds, 2)}, indent=1))


@click.group()
def labels() -> None:
    """The label matrix: every model's counts on every labeled node."""


@labels.command("compact")
@index_option
def labels_compact(index_path: Path | None) -> None:
    """Store label folders the matrix lacks, merge its shards into one, and stack every model's top nodes
    per sample set (the restricted mode reads them together)."""
    from mll_index.core.paths import default_index_path
    from mll_index.labels.matrix import compact_matrix, has_matrix
    from mll_index.labels.sync import sync_matrix
    from mll_index.labels.topk_table import write_topk_tables

    from mll_index.index.node_index import read_index_manifest

    path = index_path or default_index_path()
    read_index_manifest(path)    # a folder that is no index is refused before anything is written there
    added = sync_matrix(path)
    report = compact_matrix(path) if has_matrix(path) else {}
    click.echo(json.dumps({"stored_from_folders": added, **report, "topk_tables": write_topk_tables(path)}, indent=1))


def _label_summary(path: Path) -> dict[str, Any]:
    """For `info`: the labeled models (ids, and the damaged folders with why) and the published labels
    (models, datasets, the rule), each only where the index has them; never raises (verify names damage)."""
    from mll_index.labels.folders import scan_labels
    from mll_index.labels.matrix import has_matrix, open_matrix
    from mll_index.published.store import has_published, open_published

    out: dict[str, Any] = {}
    with contextlib.suppress(MLLIndexError, OSError, ValueError):
        models = open_matrix(path).model_ids if has_matrix(path) else []
        scan = scan_labels(path)
        ids = sorted(set(models) | set(scan.folders))
        if ids or scan.damaged:
            out["labeled_models"] = {"count": len(ids), "ids": ids, **({"damaged": scan.damaged} if scan.damaged else {})}
    with contextlib.suppress(MLLIndexError, OSError, ValueError):
        if has_published(path):
            pub = open_published(path)
            out["published_labels"] = {"models": len(pub.models), "datasets": pub.dataset_names,
                                       "results": pub.manifest.get("results"), "rule": pub.rule.to_dict()}
    return out


COMMANDS = [graph, expand, build, match, info, add_nodes_command, labels]
