// The clone form's parameter rows: add one, remove one. The form works without this script (it
// always carries one empty row to fill in).
document.addEventListener("click", (event) => {
  const target = event.target;
  if (!(target instanceof HTMLElement)) return;
  if (target.id === "add-param") {
    const template = document.getElementById("param-template");
    const rows = document.getElementById("param-rows");
    if (template instanceof HTMLTemplateElement && rows) {
      rows.appendChild(template.content.cloneNode(true));
      const inputs = rows.querySelectorAll("input[name=param_name]");
      const last = inputs[inputs.length - 1];
      if (last instanceof HTMLInputElement) last.focus();
    }
  } else if (target.classList.contains("remove-param")) {
    const row = target.closest(".param-row");
    if (row) row.remove();
  }
});
