"""Step 1: the architecture plan every other phase builds on."""

from daemon.states.base import ArchAnswer, Phase, StepGroup

ARCHITECTURE = StepGroup(1, "ARCHITECTURE ANALYSIS", "Architecture analyzed")

ARCHITECTURE_PHASES = (
    Phase(
        name="ARCH",
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
            "consistent: every endpoint a page calls must be in the endpoint list, with the "
            "names of its request and response schemas.\n\n"
            "Then the file plan: every file of the project, in the order of the phases listed "
            "below, each with the phase that writes it, its purpose, every name other files "
            "import from it with its exact signature (functions with parameters and return "
            "types, ORM models and pydantic schemas with their fields, components with their "
            "props, hooks, API client functions with request and response types, routers "
            "with their routes as METHOD /path), and the paths of the project files it "
            "imports. Each phase writes exactly its planned files and imports the others by "
            "these paths and names, also files of phases that run at the same time, so the "
            "plan must agree with itself: every import names a planned file and a name that "
            "file exports, and every endpoint the frontend calls is a route of a planned "
            "router. If the plan does not fit in one answer, stop after whole entries, set "
            "complete to false, and you will be asked for the rest."
        ),
        max_tokens=2000,
        needs=(),
        output_model=ArchAnswer,
        critical=True,
    ),
)
