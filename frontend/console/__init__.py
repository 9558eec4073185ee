"""The tenant console: runs, agents and settings pages under /t/<slug>/.

Each page module holds its views and its `urlpatterns`; `urls.py` includes them.
Views stay thin: they read through the apps' selectors, write through their services
(so every change is audited), render with `frontend.render.render_page` and check
the role with `frontend.roles.requires`. Settings pages are listed once, in
`settings/pages.py`, which gives both their URL and their place in the sub-navigation.
"""
