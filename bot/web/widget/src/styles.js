// The widget's styles, scoped to its shadow root: the host page's CSS cannot reach in, and
// nothing here leaks out. Theme colours are CSS variables set from data- attributes.
export const STYLES = `
:host { all: initial; }
* { box-sizing: border-box; }
.root { --accent: #1d9bf0; --bg: #ffffff; --fg: #0f1419; --muted: #536471; --line: #e6e9ec;
  --bubble: #f2f4f6; --card: #f7f9fa; --danger: #c62828;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); }
.root.dark { --bg: #15181c; --fg: #e7e9ea; --muted: #8b98a5; --line: #2f3336; --bubble: #202327;
  --card: #1b1f23; --danger: #ef5350; }
button { font: inherit; color: inherit; cursor: pointer; }
button:focus-visible, select:focus-visible, textarea:focus-visible, a:focus-visible, input:focus-visible {
  outline: 2px solid var(--accent); outline-offset: 2px; }
.launcher { position: fixed; right: 20px; bottom: 20px; width: 56px; height: 56px; border-radius: 50%;
  border: none; background: var(--accent); color: #fff; font-size: 26px; box-shadow: 0 4px 14px rgba(0,0,0,.25);
  z-index: 2147483000; }
.panel { position: fixed; right: 20px; bottom: 88px; width: 400px; max-width: calc(100vw - 24px);
  height: 620px; max-height: calc(100vh - 110px); background: var(--bg); color: var(--fg);
  border: 1px solid var(--line); border-radius: 16px; box-shadow: 0 10px 40px rgba(0,0,0,.25);
  display: flex; flex-direction: column; overflow: hidden; z-index: 2147483000; }
.panel[hidden] { display: none; }
@media (max-width: 480px) {
  .panel { right: 0; bottom: 0; width: 100vw; max-width: 100vw; height: 100%; max-height: 100%; border-radius: 0; }
  .launcher { right: 14px; bottom: 14px; }
}
header { display: flex; align-items: center; gap: 6px; padding: 8px 10px; border-bottom: 1px solid var(--line); }
header h2 { font-size: 16px; margin: 0 auto 0 4px; font-weight: 700; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.icon { background: none; border: none; border-radius: 8px; padding: 6px 8px; min-width: 34px; min-height: 34px; }
.icon:hover, .chip:hover, .tool:hover { background: var(--bubble); }
select { font: inherit; color: var(--fg); background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 4px; }
.drawer { border-bottom: 1px solid var(--line); max-height: 45%; overflow: auto; padding: 6px 10px; }
.drawer[hidden] { display: none; }
.drawer h3 { font-size: 13px; margin: 4px 0; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.conv { display: flex; align-items: center; gap: 4px; }
.conv .open { flex: 1; text-align: left; background: none; border: none; padding: 6px; border-radius: 8px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.conv .open[aria-current="true"] { background: var(--bubble); font-weight: 600; }
.log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 10px; }
.msg { max-width: 92%; }
.msg.user { align-self: flex-end; }
.msg.assistant { align-self: flex-start; }
.bubble { padding: 8px 12px; border-radius: 14px; background: var(--bubble); overflow-wrap: anywhere; }
.msg.user .bubble { background: var(--accent); color: #fff; }
.msg.user .bubble a { color: #fff; }
.bubble p { margin: 0 0 6px; } .bubble p:last-child { margin-bottom: 0; }
.bubble pre { overflow-x: auto; background: rgba(0,0,0,.06); padding: 6px; border-radius: 6px; }
.bubble a { color: var(--accent); }
.tools { display: flex; flex-wrap: wrap; align-items: center; gap: 2px; margin-top: 2px; color: var(--muted); font-size: 13px; }
.msg.user .tools { justify-content: flex-end; }
.tool { background: none; border: none; border-radius: 6px; padding: 3px 6px; color: var(--muted); font-size: 13px; min-height: 28px; }
.tool[aria-pressed="true"] { color: var(--accent); }
.tool:disabled { opacity: .4; cursor: default; }
.version { font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-direction: column; gap: 6px; margin-top: 6px; }
.card { border: 1px solid var(--line); background: var(--card); border-radius: 10px; padding: 6px 8px; font-size: 13px; }
.card .who { font-weight: 600; } .card .when { color: var(--muted); margin-left: 4px; }
.card .text { margin: 2px 0; display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; white-space: pre-wrap; }
.card a { color: var(--accent); }
.chips { display: flex; flex-wrap: wrap; gap: 6px; padding: 0 12px 6px; }
.chip { border: 1px solid var(--accent); color: var(--accent); background: none; border-radius: 999px; padding: 4px 10px; font-size: 13px; }
.status { color: var(--muted); font-size: 13px; padding: 0 12px; min-height: 18px; }
.status.error { color: var(--danger); }
.notice { margin: 0 0 4px; padding: 4px 8px; border-left: 3px solid var(--muted); color: var(--muted); font-size: 13px; white-space: pre-wrap; }
form.composer { display: flex; gap: 6px; padding: 8px 10px; border-top: 1px solid var(--line); }
textarea { flex: 1; resize: none; font: inherit; color: var(--fg); background: var(--bg); border: 1px solid var(--line);
  border-radius: 10px; padding: 8px; min-height: 42px; max-height: 140px; }
.send { border: none; background: var(--accent); color: #fff; border-radius: 10px; padding: 0 14px; min-width: 64px; }
.editor { display: flex; flex-direction: column; gap: 4px; }
.editor textarea { min-height: 100px; max-height: 240px; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
.editor .preview { border: 1px dashed var(--line); border-radius: 8px; padding: 6px; font-size: 14px; }
.editor .row { display: flex; gap: 6px; justify-content: flex-end; }
.editor .row button { border: 1px solid var(--line); background: var(--bg); border-radius: 8px; padding: 4px 10px; }
.editor .row .primary { background: var(--accent); color: #fff; border-color: var(--accent); }
.trend { padding: 4px 0; border-bottom: 1px solid var(--line); font-size: 14px; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.cursor::after { content: "▍"; animation: blink 1s steps(2) infinite; color: var(--muted); }
@keyframes blink { 50% { opacity: 0; } }
`;
