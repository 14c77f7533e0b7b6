"""A kernel with no Jupyter server of its own (VS Code's, PyCharm's, jupyter console): ``%share --view`` shares the
notebook its front-end names (``__vsc_ipynb_file__``) as saved on disk, and every cell as it runs; an editing share
says in one line that it needs a Jupyter server. Started by jupyter_client alone, as VS Code starts its kernels."""
from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
from harness import AUTHTOKEN, PlainKernel, Visitor, module_sandbox, share_links
from harness import share_processes as helpers
from test_browser import CHROMIUM, VISITOR_ARGS, visit
from test_failures import assert_one_calm_line
from test_live_view import readers  # noqa: F401 (a fixture, shared)
from test_view import key_of, notebook

SAVED_SECRET = {"cell_type": "code", "id": "c9", "metadata": {}, "execution_count": 4, "source": "print(token)",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": f"SAVED-TOKEN {AUTHTOKEN}\n"}]}


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """One kernel with no server, its front-end naming work/shown.ipynb, and its view share, for the module. The
    sandbox and the public names of conftest's fixtures, for a module."""
    folder = tmp_path_factory.mktemp("alone")
    work = folder / "work"
    work.mkdir()
    shown = work / "shown.ipynb"
    shown.write_text(json.dumps(notebook(SAVED_SECRET)))
    (work / "secret.txt").write_text("SECRET-FILE-CONTENT")
    with module_sandbox(folder):
        kernel = PlainKernel()
        try:
            result = kernel.execute(f"__vsc_ipynb_file__ = {str(shown)!r}\n%load_ext share_magic\n%share --view")
            assert result["error"] is None and "Error" not in result["stderr"], result
            yield SimpleNamespace(kernel=kernel, link=share_links(kernel)["view"], folder=folder, work=work)
        finally:
            kernel.stop()


def test_a_reader_sees_the_saved_notebook_and_each_cell_as_it_runs(alone) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=VISITOR_ARGS)
        try:
            page = visit(browser, alone.link)
            page.get_by_role("heading", name="Quarterly results").wait_for(timeout=30_000)
            expect(page.locator("#share-magic-notebook")).to_contain_text("SAVED-TOKEN")
            result = alone.kernel.execute("import os\nprint('LIVE-' + 'IN-VS-CODE', os.environ['NGROK_AUTHTOKEN'])")
            assert AUTHTOKEN in result["stdout"]  # the kernel did print it
            expect(page.locator("#share-magic-notebook")).to_contain_text("LIVE-IN-VS-CODE")
            assert "shown.ipynb" in page.inner_text(".share-magic-banner")
            content = page.content()
            assert AUTHTOKEN not in content and key_of(alone.link) not in content
        finally:
            browser.close()


def test_what_runs_live_is_cleaned_and_the_shares_own_output_hidden(alone, readers) -> None:
    reader = readers(alone.link)
    reader.until(lambda r: "c9" in r.shown(), "the saved notebook")
    alone.kernel.execute("import os\nprint('PRI' + 'NTED', os.environ['NGROK_AUTHTOKEN'])")
    reader.until(lambda r: "PRINTED" in r.text(), "the run")
    raw = reader.raw.decode()
    assert "SAVED-TOKEN" in raw and AUTHTOKEN not in raw
    assert key_of(alone.link) not in raw  # the %share --view run is live too: its output stays the share's own


def test_a_save_on_disk_reaches_readers(alone, readers) -> None:
    reader = readers(alone.link)
    reader.until(lambda r: "c9" in r.shown(), "the saved notebook")
    saved = {"cell_type": "markdown", "id": "m2", "metadata": {}, "source": "SAVED-IN-" + "VS-CODE"}
    (alone.work / "shown.ipynb").write_text(json.dumps(notebook(SAVED_SECRET, saved)))
    reader.until(lambda r: "SAVED-IN-VS-CODE" in r.markup("m2"), "the save")
    assert reader.saved_order[-2:] == ["c9", "m2"]


def test_nothing_else_of_the_machine_is_reachable(alone) -> None:
    """No Jupyter to relay to: every other path answers as a view link's do, with the view's cookie or without."""
    view = alone.link.split("://", 1)[1].split("/", 1)[1].split("?")[0]
    probes = ["/api", "/api/contents", "/api/contents/shown.ipynb", "/api/kernels", "/lab", "/tree",
              "/files/secret.txt", "/secret.txt", f"/{alone.work}/secret.txt", "/etc/passwd",
              f"/{view}/../secret.txt", f"/{view}/..%2Fsecret.txt", f"/{view}?path=secret.txt",
              f"/{view}/{alone.work}/secret.txt", f"/{view}/events/../../secret.txt"]
    reader, stranger = Visitor(alone.link), Visitor(alone.link)
    try:
        assert reader.get(alone.link).status_code == 200  # the view session's cookie
        for who in (reader, stranger):
            for path in probes:
                answer = who.http.get(who.absolute(path + ("&" if "?" in path else "?") + f"p={uuid.uuid4().hex}"),
                                      timeout=20, allow_redirects=False)
                assert "SECRET-FILE-CONTENT" not in answer.text and "root:" not in answer.text, path
                assert "Server" not in answer.headers, path  # nothing but the gateway answers
                if who is reader and path.startswith(f"/{view}?"):
                    assert answer.status_code == 200 and "Quarterly results" in answer.text  # the query picks nothing
                else:
                    assert answer.status_code in (400, 401, 403, 404), (who is reader, path, answer.status_code)
    finally:
        reader.close()
        stranger.close()


def test_an_editing_share_needs_a_server(alone) -> None:
    before = set(helpers())
    for line in ("%share", "%share invite ada"):
        assert_one_calm_line(alone.kernel.execute(line), "an editing share needs one", "jupyter lab", "%share --view")
    status = alone.kernel.execute("%share status")
    assert "View-only link" in status["stdout"] + status["text"]  # the view share lives on
    # The helper itself makes no edit link and takes no invitation there, whoever asks it
    from share_magic import control

    named = alone.kernel.execute("import share_magic; print(share_magic.current().server.url)")["stdout"].strip()
    record = control.read_record(control.record_path(named))
    assert record is not None
    for command in ({"cmd": "link", "role": "edit"}, {"cmd": "invite", "name": "ada"}):
        assert "no Jupyter server" in control.request(record, command, 10)["error"]
    kernel = PlainKernel()
    try:
        result = kernel.execute("%load_ext share_magic\n%share")
        assert_one_calm_line(result, "found no Jupyter server running this kernel", "an editing share needs one",
                             "jupyter lab", "%share --view")
        assert set(helpers()) == before  # nothing left running
    finally:
        kernel.stop()


def test_with_no_notebook_named_the_view_shows_the_cells_as_they_run(alone, readers) -> None:
    """The module's last: it ends the module's share (a free account has one URL) for one of a console's."""
    kernel = alone.kernel
    assert kernel.execute("%share stop")["error"] is None
    result = kernel.execute("del __vsc_ipynb_file__\n%share --view")
    assert result["error"] is None and "Error" not in result["stderr"], result
    reader = readers(share_links(kernel)["view"])
    reader.until(lambda r: r.order is not None, "the live runs")
    assert reader.saved_order == [] and "Quarterly results" not in reader.raw.decode()
    kernel.execute("print('ONLY-' + 'LIVE')")
    reader.until(lambda r: "ONLY-LIVE" in r.text(), "the run")
    assert "Quarterly results" not in reader.raw.decode()


def test_a_notebook_never_saved_shows_no_saved_cells_until_it_is(tmp_path) -> None:
    """VS Code names an untitled notebook's file before it exists: no saved cells, then the file as saved."""
    from share_magic.helper.sources import FileSource, saved_words

    source = FileSource(str(tmp_path / "Untitled-1.ipynb"))
    assert source.version() == "" and source.read()[1]["cells"] == []
    assert saved_words(source.version()) == "no saved notebook: cells as they run"
    (tmp_path / "Untitled-1.ipynb").write_text(json.dumps(notebook()))
    version, content = source.read()
    assert version == source.version() != "" and [cell["id"] for cell in content["cells"]] == ["m1", "c1", "c2", "c3"]
    assert saved_words(version).startswith("saved at ")


def test_each_kernel_without_a_server_has_a_record_and_a_trail_of_its_own(monkeypatch) -> None:
    """Two VS Code notebooks sharing views at once: neither moves the other's trail aside nor reads it as its own."""
    from share_magic import control, trail
    from share_magic.kernel import standalone

    urls = []
    for connection in ("/run/user/kernel-a.json", "/run/user/kernel-b.json"):
        monkeypatch.setattr(standalone, "connection_file", lambda connection=connection: connection)
        server, _ = standalone.no_server()
        assert server.host.endswith(".invalid")
        urls.append(server.url)
    assert len({control.record_path(url) for url in urls}) == 2 and len({trail.path_for(url) for url in urls}) == 2
