"""kontinuum's Grafana dashboards and Prometheus rules, as code.

`python -m dashboards.generate` writes what Grafana and Prometheus load:

    dashboards/generated/*.json        the dashboards (Grafana's JSON model)
    dashboards/rules/kontinuum.rules.yaml   recording and alerting rules
    dashboards/provisioning/           Grafana provisioning: the Prometheus datasource
                                       and the dashboards folder

A test regenerates them and fails when the committed files differ.
"""
