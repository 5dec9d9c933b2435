"""Error messages in the user's words: the command line says "query" / "reference" and names
its options; the Python API names its arguments. A one-sample study is told what to do."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import pairot as pr
from pairot._run import DEMO_COLUMNS, RunParameters, run_pipeline
from pairot.cli import main
from pairot.pp._validate import study_names

COLUMNS = DEMO_COLUMNS
PYTHON_ARGS = {
    "cell_type_column_adata1": "cell_type",
    "cell_type_column_adata2": "cell_type",
    "sample_column_adata1": "sample_id",
    "sample_column_adata2": "sample_id",
}
PYTHON_WORDS = re.compile(r"adata[12]|_column_|cell_type_column|sample_column")


@pytest.fixture(scope="module")
def demo():
    return pr.datasets.pbmc_demo()


def one_sample(adata):
    adata = adata.copy()
    adata.obs["sample_id"] = pd.Categorical(["donor1"] * adata.n_obs)
    return adata


def pipeline_error(query, reference, error=ValueError, **columns) -> str:
    parameters = RunParameters(**{**COLUMNS, **columns})
    with pytest.raises(error) as info:
        run_pipeline(query, reference, parameters, progress=False)
    return str(info.value.args[0] if error is KeyError else info.value)


def test_one_sample_query_through_the_pipeline(demo):
    query, reference = demo
    message = pipeline_error(one_sample(query), reference)
    assert message.startswith(
        "The query study has only one sample (donor) in --query-sample 'sample_id', and "
        "pseudobulk differential expression needs at least two: give --query-sample the column "
        "that identifies the donors or batches, or use a study with more samples."
    ), message
    assert PYTHON_WORDS.search(message) is None, message


def test_one_sample_reference_python_api_names_arguments(demo):
    query, reference = demo
    with pytest.raises(ValueError) as info:
        pr.pp.preprocess_adatas(query, one_sample(reference), **PYTHON_ARGS)
    message = str(info.value)
    assert message.startswith(
        "adata2 has only one sample (donor) in sample_column_adata2='sample_id', and "
        "pseudobulk differential expression needs at least two: give sample_column_adata2 the "
        "column that identifies the donors or batches"
    ), message
    # the same data through the pipeline speaks of the reference and its option
    message = pipeline_error(query, one_sample(reference))
    assert message.startswith("The reference study has only one sample (donor) in --ref-sample")
    assert PYTHON_WORDS.search(message) is None, message


def test_bad_columns_and_data_through_the_pipeline(demo):
    query, reference = demo
    message = pipeline_error(query, reference, KeyError, ref_cell_type="nope")
    assert message.startswith("--ref-cell-type 'nope' is not a column of the reference's obs")
    assert PYTHON_WORDS.search(message) is None, message

    gaps = query.copy()
    gaps.obs["cell_type"] = gaps.obs["cell_type"].astype(object)
    gaps.obs.iloc[:2, gaps.obs.columns.get_loc("cell_type")] = np.nan
    message = pipeline_error(gaps, reference)
    assert message.startswith("the query's obs['cell_type'] has 2 missing values"), message
    assert PYTHON_WORDS.search(message) is None, message

    message = pipeline_error(query, reference, query_sample="cell_type")
    assert message.startswith("--query-cell-type and --query-sample are both 'cell_type'")

    scaled = reference.copy()
    scaled.X = scaled.X.astype(np.float32)
    scaled.X.data = np.log1p(scaled.X.data)
    message = pipeline_error(query, scaled)
    assert message.startswith("the reference's X contains non-integer values"), message
    assert "looks log-transformed" in message
    assert "adata.layers['counts']" in message
    assert PYTHON_WORDS.search(message) is None, message

    single = reference[reference.obs["cell_type"] == "CD19+ B"].copy()
    message = pipeline_error(query, single)
    assert message.startswith(
        "The reference study has a single cluster ('CD19+ B') in --ref-cell-type 'cell_type'"
    )


def test_study_names_is_local_to_its_block(demo):
    query, reference = demo
    bad = one_sample(query)
    with study_names(), pytest.raises(ValueError, match=r"^The query study has only one"):
        pr.pp.preprocess_adatas(bad, reference, **PYTHON_ARGS)
    # after the block (left by an exception), the Python names are back
    with pytest.raises(ValueError, match=r"^adata1 has only one sample"):
        pr.pp.preprocess_adatas(bad, reference, **PYTHON_ARGS)
    # other words can be given
    with (
        study_names({"adata1": "mouse", "sample_column_adata1": "donor_key"}),
        pytest.raises(ValueError, match=r"^The mouse study has only one sample .* give donor_key"),
    ):
        pr.pp.preprocess_adatas(bad, reference, **PYTHON_ARGS)


def test_one_sample_on_the_command_line(demo, tmp_path, capsys):
    query, reference = demo
    one_sample(query).write_h5ad(tmp_path / "query.h5ad")
    reference.write_h5ad(tmp_path / "reference.h5ad")
    args = ["run", str(tmp_path / "query.h5ad"), str(tmp_path / "reference.h5ad")]
    for option, column in zip(
        ("--query-cell-type", "--ref-cell-type", "--query-sample", "--ref-sample"),
        COLUMNS.values(),
    ):
        args += [option, column]
    assert main([*args, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        "pairot: error: The query study has only one sample (donor) in --query-sample "
        "'sample_id', and pseudobulk differential expression needs at least two: give "
        "--query-sample the column"
    ), lines[0]
    assert PYTHON_WORDS.search(lines[0]) is None, lines[0]
    assert not (tmp_path / "out").exists()


def test_embedding_errors_in_the_pipeline_say_query_and_reference(demo):
    """DatasetMap's embedding checks, reached from the command line, use its words too."""
    query, reference = (adata.copy() for adata in demo)
    rng = np.random.default_rng(0)
    query.obsm["X_emb"] = rng.normal(size=(query.n_obs, 5))
    reference.obsm["X_emb"] = rng.normal(size=(reference.n_obs, 4))
    message = pipeline_error(query, reference, embedding_layer="X_emb")
    assert message == (
        "--embedding-layer 'X_emb' has 5 dimensions in the query study but 4 in the reference "
        "study; use a shared embedding."
    )
    reference.obsm["X_emb"] = rng.normal(size=(reference.n_obs, 5))
    reference.obsm["X_emb"][3, 1] = np.nan
    message = pipeline_error(query, reference, embedding_layer="X_emb")
    assert message.startswith("the reference's obsm['X_emb']: "), message
    assert PYTHON_WORDS.search(message) is None, message
    # the Python API keeps naming its arguments
    q, r = pr.pp.preprocess_adatas(query, reference, **PYTHON_ARGS, n_top_genes=50)
    q.obsm["X_emb"] = rng.normal(size=(q.n_obs, 3))
    with pytest.raises(ValueError, match=r"embedding_layer='X_emb' has 3 dimensions in adata1"):
        pr.tl.DatasetMap(q, r).init_geom(embedding_layer="X_emb")


def test_too_few_genes_in_the_pipeline_say_the_options(demo):
    """The minimum of genes for the cell term, reached from the command line's pipeline, names
    --min-shared-genes and --n-top-genes; the Python API names its arguments."""
    query, reference = (adata.copy() for adata in demo)
    reference.var_names = [g if i < 30 else f"X{i}" for i, g in enumerate(reference.var_names)]
    message = pipeline_error(query, reference)
    assert re.match(
        r"The query study and the reference study share only (\d+) genes expressed \(total "
        r"count > 10\) in both, fewer than --min-shared-genes 50: the cell term of the cost",
        message,
    ), message
    n_shared = int(re.match(r".* share only (\d+) genes", message).group(1))
    assert message.endswith(f"to run anyway, pass --min-shared-genes {n_shared}.")
    assert PYTHON_WORDS.search(message) is None and "min_shared_genes" not in message
    message = pipeline_error(*demo, n_top_genes=30)
    assert message.startswith("--n-top-genes 30 is below --min-shared-genes 50: the cell term")
    assert "n_top_genes" not in message and "min_shared_genes" not in message
    with pytest.raises(ValueError, match=r"^adata1 and adata2 share only .*min_shared_genes=50"):
        pr.pp.preprocess_adatas(query, reference, **PYTHON_ARGS)
