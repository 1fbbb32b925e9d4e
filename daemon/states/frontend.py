"""Step 4: the frontend, from build setup to pages and components."""

from daemon.states.base import Phase, PhaseFiles, StepGroup

FRONTEND = StepGroup(4, "FRONTEND GENERATION (Multi-phase)", "Frontend generated")

FRONTEND_PHASES = (
    Phase(
        name="FE_SETUP",
        step="4.1",
        title="Frontend build setup: package.json, tsconfig, vite, tailwind, postcss",
        group=FRONTEND,
        progress="Generating frontend build setup",
        noun="setup",
        instructions=(
            "Write the frontend's build configuration under frontend/: package.json with "
            "every dependency of the plan and dev/build scripts, tsconfig.json, "
            "vite.config.ts, tailwind.config.js, postcss.config.js and index.html."
        ),
        max_tokens=3000,
        needs=("ARCH",),
        output_model=PhaseFiles,
        area="frontend/",
    ),
    Phase(
        name="FE_CORE",
        step="4.2",
        title="Frontend core: main.tsx, App.tsx with routing, contexts, API client, global styles",
        group=FRONTEND,
        progress="Generating frontend core (routing, contexts, API client)",
        noun="core",
        instructions=(
            "Write src/main.tsx, src/App.tsx with a route for every page of the plan, the "
            "auth context, a typed API client with one function per endpoint, and the "
            "global stylesheet."
        ),
        max_tokens=4000,
        needs=("FE_SETUP",),
        output_model=PhaseFiles,
        area="frontend/",
    ),
    Phase(
        name="FE_PAGES",
        step="4.3",
        title="Frontend pages: one per route, data fetching, loading/error states, forms",
        group=FRONTEND,
        progress="Generating pages",
        noun="page",
        instructions=(
            "Write one page component per route of the plan, with data fetching through "
            "the API client in the manifest, loading and error states, and forms."
        ),
        max_tokens=5000,
        needs=("FE_CORE",),
        output_model=PhaseFiles,
        area="frontend/",
    ),
    Phase(
        name="FE_COMPONENTS",
        step="4.4",
        title="Frontend components and utilities: layout, UI kit, hooks, helpers",
        group=FRONTEND,
        progress="Generating components and utilities",
        noun="component",
        instructions=(
            "Write every reusable component of the plan (layout, navigation, UI kit), the "
            "custom hooks and helper functions the pages import."
        ),
        max_tokens=4000,
        needs=("FE_CORE",),
        output_model=PhaseFiles,
        area="frontend/",
    ),
)
