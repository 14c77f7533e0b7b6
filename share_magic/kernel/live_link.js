// One live link of a share, drawn in the owner's browser only. The link never becomes part of the widget's model
// state (which JupyterLab can save into the notebook): each view asks the kernel for it with a custom message when
// it renders, and the kernel answers (and sends again whenever the link changes) with another custom message.

function copy(text, button) {
  const done = () => {
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = "Copy"), 2000);
  };
  if (navigator.clipboard) {
    navigator.clipboard.writeText(text).then(done);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  done();
}

function draw(model, el, link, qr) {
  el.replaceChildren();
  if (!link) return;
  for (const part of model.get("parts")) {
    if (part === "link") {
      const label = document.createElement("b");
      label.textContent = model.get("label");
      const anchor = document.createElement("a");
      anchor.className = model.get("css_class");
      anchor.href = link;
      anchor.target = "_blank";
      anchor.rel = "noopener";
      anchor.title = link;
      anchor.textContent = link;
      el.append(label, " ", anchor);
    } else if (part === "copy") {
      const button = document.createElement("button");
      button.className = "jupyter-button widget-button share-magic-copy";
      button.title = "Copy the link";
      button.textContent = "Copy";
      button.dataset.link = link;
      button.addEventListener("click", () => copy(link, button));
      el.append(button);
    } else if (part === "qr" && qr) {
      const code = document.createElement("div");
      code.className = "share-magic-qr";
      code.title = "Scan to open the link on a phone or tablet";
      code.innerHTML = qr; // an SVG made by the kernel (segno), not by the notebook
      el.append(code);
    }
  }
}

export default {
  render({ model, el }) {
    el.classList.add("share-magic-live-link");
    const answer = (message) => {
      if (message && message.type === "link") draw(model, el, message.link, message.qr);
    };
    model.on("msg:custom", answer);
    model.send({ type: "link?" });
    return () => model.off("msg:custom", answer);
  },
};
