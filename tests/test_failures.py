"""Expected failures: one calm UsageError line (what failed, why, the fix), no traceback, nothing left running."""
from __future__ import annotations


import pytest
from harness import AUTHTOKEN, share_links, share_processes, wait_for


def assert_one_calm_line(result: dict, *expected: str) -> str:
    """The cell printed exactly one `UsageError: ...` line, with no traceback, mentioning ``expected``."""
    assert result["error"] is None, result["error"]
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), result["stderr"]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


NGROK_REFUSALS = [
    ("no authtoken", "os.environ.pop('NGROK_AUTHTOKEN')",
     ["no ngrok authtoken is set", "dashboard.ngrok.com", "ngrok config add-authtoken"]),
    ("malformed authtoken", "os.environ['NGROK_AUTHTOKEN'] = 'not an authtoken!'",
     ["does not look like an ngrok authtoken", "ERR_NGROK_105"]),
    ("revoked authtoken", "os.environ['STANDIN_NGROK_MODE'] = 'revoked'", ["reset or revoked", "ERR_NGROK_107"]),
    ("too many agents", "os.environ['STANDIN_NGROK_MAX_AGENTS'] = '0'", ["as many ngrok agents", "ERR_NGROK_108"]),
    ("agent too old", "os.environ['STANDIN_NGROK_MODE'] = 'too-old'", ["too old", "ngrok update", "ERR_NGROK_121"]),
    ("no credit", "os.environ['STANDIN_NGROK_MODE'] = 'no-credit'", ["no credit", "ERR_NGROK_4026"]),
    ("no agent binary, offline", "os.environ['PYNGROK_NGROK_PATH'] = '/nonexistent/ngrok'",
     ["not installed", "could not download", "PYNGROK_NGROK_PATH"]),
]


def test_ngrok_refusals_each_get_their_own_plain_sentence(jupyter, owner, visitor) -> None:
    notebook = owner(jupyter())
    notebook.run("%load_ext share_magic\nimport os\nORIGINAL = dict(os.environ)")
    for case, setup, expected in NGROK_REFUSALS:
        notebook.run(f"os.environ.clear(); os.environ.update(ORIGINAL)\n{setup}")
        line = assert_one_calm_line(notebook.execute("%share"), *expected)
        assert AUTHTOKEN not in line and "not an authtoken!" not in line, case
        wait_for(lambda: not share_processes(), 5, f"nothing left running after: {case}")
        assert "Share failed" in notebook.run("%share status"), case


def test_a_silent_agent_is_given_up_on_at_the_start_timeout(jupyter, owner) -> None:
    """pyngrok alone would wait forever; the share gives up at its start timeout (20 s unless configured: 4 here,
    which the message names) and ends the agent."""
    notebook = owner(jupyter())
    notebook.run("%load_ext share_magic\nimport os; os.environ['STANDIN_NGROK_MODE'] = 'hang'\n"
                 "%config ShareMagics.startup_timeout = 4")
    result = notebook.execute("%share")
    assert_one_calm_line(result, "did not start within 4 s", "printed nothing")
    wait_for(lambda: not share_processes(), 5, "the silent agent to be ended")


def test_an_endpoint_already_online_elsewhere(jupyter, owner, sandbox) -> None:
    from pyngrok import conf, ngrok

    elsewhere = conf.PyngrokConfig(ngrok_path=sandbox["PYNGROK_NGROK_PATH"], auth_token=AUTHTOKEN)
    ngrok.connect("9", pyngrok_config=elsewhere)  # `ngrok http 9` in someone's terminal, same account
    try:
        notebook = owner(jupyter())
        result = notebook.execute("%load_ext share_magic\n%share")
        assert_one_calm_line(result, "already online elsewhere", "ERR_NGROK_334")
        assert len(share_processes()) == 1  # only the terminal's agent
    finally:
        ngrok.kill(pyngrok_config=elsewhere)


def test_a_server_without_authentication_is_refused_unless_insisted(jupyter, owner, visitor) -> None:
    server = jupyter(token="")
    notebook = owner(server)
    refused = notebook.execute("%load_ext share_magic\n%share")
    assert_one_calm_line(refused, "no authentication", "anyone on the internet", "jupyter server password",
                         "--insecure")
    assert not share_processes()
    insisted = notebook.execute("%share --insecure")
    assert "WARNING: this server has no authentication" in insisted["text"]
    assert visitor(share_links(notebook)["edit"]).reaches_jupyter()


def test_no_server_behind_the_kernel(plain_kernel) -> None:
    result = plain_kernel.execute("%load_ext share_magic\n%share")
    assert_one_calm_line(result, "found no Jupyter server running this kernel", "%share --port 8888")
    assert not share_processes()


@pytest.mark.parametrize("marker, expected", [
    ("COLAB_RELEASE_TAG", "Google Colab"),
    ("KAGGLE_KERNEL_RUN_TYPE", "Kaggle ends sessions that open tunnels"),
    ("JUPYTERHUB_API_URL", "JupyterHub or Binder"),
    ("BINDER_REPO_URL", "JupyterHub or Binder"),
    ("VOILA_KERNEL_ID", "Voilà"),
])
def test_hosted_platforms_are_explained(plain_kernel, marker: str, expected: str) -> None:
    result = plain_kernel.execute(f"import os; os.environ['{marker}'] = 'x'\n%load_ext share_magic\n%share")
    assert_one_calm_line(result, expected)
    assert not share_processes()


@pytest.mark.parametrize("line, expected", [
    ("%share --port notaport", "'notaport' is not a port number"),
    ("%share --port 70000", "70000 is not a port number (1-65535)"),
    ("%share --bogus", "unrecognized arguments: --bogus"),
    ("%share stop now", "unrecognized arguments: now"),
    ("%share please", "invalid choice: 'please'"),
    ("%share launch", "invalid choice: 'launch'"),
    ("%share stop", "nothing to stop"),
])
def test_bad_arguments(plain_kernel, line: str, expected: str) -> None:
    message = assert_one_calm_line(plain_kernel.execute(f"%load_ext share_magic\n{line}"), expected)
    assert "%share?" in message or "Start a share with %share" in message
    assert not share_processes()


def test_usage_is_one_question_mark_away(jupyter, owner) -> None:
    notebook = owner(jupyter())
    result = notebook.execute("%load_ext share_magic\n%share?")
    shown = "".join(p["data"]["text/plain"] for p in result["payload"] if p.get("source") == "page")
    for option in ("--for", "--port", "--url", "--token", "--no-token", "--authtoken", "--insecure", "full control"):
        assert option in shown, option


@pytest.mark.parametrize("line, expected", [
    ("%share --for 30", "'30' is not a duration"),
    ("%share --for soon", "'soon' is not a duration"),
    ("%share --for 0s", "more than 0 s and at most 30 days"),
    ("%share --for 40d", "more than 0 s and at most 30 days"),
    ("%config ShareMagics.duration = '1 hour'\n%share", "'1 hour' is not a duration"),
])
def test_bad_durations(plain_kernel, line: str, expected: str) -> None:
    message = assert_one_calm_line(plain_kernel.execute(f"%load_ext share_magic\n{line}"), expected)
    assert "e.g. --for 30m" in message
    assert not share_processes()
