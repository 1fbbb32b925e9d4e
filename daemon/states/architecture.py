"""Step 1: the architecture plan every other phase builds on."""

from daemon.states.base import ArchPlan, Phase, StepGroup

ARCHITECTURE = StepGroup(1, "ARCHITECTURE ANALYSIS", "Architecture analyzed")

ARCHITECTURE_PHASES = (
    Phase(
        state="ARCH",
        step="1",
        title="Architecture analysis: pages, components, API endpoints, database tables",
        group=ARCHITECTURE,
        progress="Analyzing the mockup and planning the architecture",
        noun="plan",
        instructions=(
            "Analyse the mockup and plan the whole application. List every page with its "
            "route, the components it uses and the endpoints it calls; every reusable "
            "component; every REST endpoint (method, path, purpose, whether it needs auth); "
            "every database table with its columns; and the backend and frontend "
            "dependencies. Later phases generate code from this plan, so be complete and "
            "consistent: every endpoint a page calls must be in the endpoint list."
        ),
        max_tokens=2000,
        needs=(),
        output_model=ArchPlan,
        critical=True,
    ),
)
