"""Building blocks of kontinuum's Grafana dashboards (Grafana's foundation SDK).

Every dashboard has a stable uid, a `datasource` variable (any Prometheus), and the
`cluster`, `workspace` and `service` variables (multi-valued, All by default) that the
mesh's queries filter by, each offering the values the ones before it allow (the
workspaces of the clusters chosen, the services those callers call). Panels are laid out
left to right, two per row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    GridPos,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE: Final = DataSourceRef(type_val="prometheus", uid="${datasource}")
WIDTH: Final = 12  # of 24: two panels a row
HEIGHT: Final = 8


@dataclass(frozen=True, slots=True)
class Query:
    """One query of a panel; in a table of several queries, `column` heads its values
    (and `unit`, if given, is theirs)."""

    expr: str
    legend: str = ""
    instant: bool = False
    column: str = ""
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Chart:
    """A panel: `kind` is timeseries, stat or table; a table of `matrix` shape turns
    series labelled by (rows, columns) into a grid."""

    title: str
    description: str
    queries: Sequence[Query]
    unit: str = "short"
    kind: str = "timeseries"
    matrix: tuple[str, str] | None = None


def _variable(name: str, label: str, series: str, source_label: str) -> Any:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({series}, {source_label})")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


# (name, label, series, label of the series): the clusters and workspaces of the
# connected proxies (kontinuum's gauge, so a cluster whose proxies send nothing yet is
# there too), and the services the chosen ones' proxies have an outbound cluster for.
VARIABLES: Final = (
    ("cluster", "Cluster", "kontinuum_xds_proxies", "kontinuum_cluster"),
    (
        "workspace",
        "Workspace",
        'kontinuum_xds_proxies{kontinuum_cluster=~"$cluster"}',
        "kontinuum_workspace",
    ),
    (
        "service",
        "Service",
        'envoy_cluster_upstream_rq_completed{kontinuum_direction="outbound", '
        'kontinuum_role!="gateway", kontinuum_cluster=~"$cluster", '
        'kontinuum_workspace=~"$workspace"}',
        "kontinuum_service",
    ),
)


_REFS: Final = "ABCDEFGHIJ"  # the queries' ref ids, in order


def _targets(builder: Any, queries: Sequence[Query]) -> Any:
    for ref, query in zip(_REFS, queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref)
        if query.legend:
            target = target.legend_format(query.legend)
        if query.instant:
            target = target.instant().format(PromQueryFormat.TABLE)
        builder = builder.with_target(target)
    return builder


def _panel(chart: Chart, index: int) -> Any:
    x, y = (index % 2) * WIDTH, 1 + (index // 2) * HEIGHT
    builder: Any
    if chart.kind == "stat":
        builder = stat.Panel()
    elif chart.kind == "table":
        builder = table.Panel()
        if chart.matrix is None and len(chart.queries) > 1:
            # One row per series, a column per query ("Value #A", ...), headed and unit'ed.
            builder = builder.with_transformation(DataTransformerConfig(id_val="merge", options={}))
            for ref, query in zip(_REFS, chart.queries, strict=False):
                properties = [DynamicConfigValue(id_val="displayName", value=query.column)]
                if query.unit:
                    properties.append(DynamicConfigValue(id_val="unit", value=query.unit))
                builder = builder.override_by_name(f"Value #{ref}", properties)
        if chart.matrix is not None:
            rows, columns = chart.matrix
            builder = builder.with_transformation(
                DataTransformerConfig(
                    id_val="groupingToMatrix",
                    options={
                        "rowField": rows,
                        "columnField": columns,
                        "valueField": "Value",
                        "emptyValue": "zero",
                    },
                )
            )
    else:
        builder = timeseries.Panel().legend(
            VizLegendOptions()
            .show_legend(True)
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
        )
    builder = (
        builder.id(index + 1)
        .title(chart.title)
        .description(chart.description)
        .datasource(DATASOURCE)
        .unit(chart.unit)
        .grid_pos(GridPos(h=HEIGHT, w=WIDTH, x=x, y=y))
    )
    return _targets(builder, chart.queries)


def build(uid: str, title: str, description: str, charts: Iterable[Chart]) -> dict[str, Any]:
    """A dashboard as Grafana's JSON model."""
    builder = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["kontinuum"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
        )
    )
    for name, label, metric, source_label in VARIABLES:
        builder = builder.with_variable(_variable(name, label, metric, source_label))
    for index, chart in enumerate(charts):
        builder = builder.with_panel(_panel(chart, index))
    encoded: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return encoded


def expressions(model: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (panel title, PromQL) of a dashboard's JSON model."""
    return [
        (panel["title"], target["expr"])
        for panel in model.get("panels", [])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
