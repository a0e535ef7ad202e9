"""The reading room's image viewer: one self-contained HTML page (a canvas and a little JavaScript, no
library, nothing fetched) that a page embeds in an iframe.

It fills the height left in the browser window below it (it sizes its own iframe), on a black frame,
and fits the whole radiograph in view. Mouse and keyboard, as in a PACS viewer:

* drag: window/level (left-right: width, up-down: level); Shift+drag or middle/right drag: pan;
* wheel: zoom at the pointer; keys ``+`` / ``-``: zoom, arrows: pan, ``0`` or double-click: fit,
  ``R``: reset window/level, ``I``: invert.

Window and level work on the 8-bit image sent to the browser (a lookup table per drag).
"""

from __future__ import annotations

import html as _html

import numpy as np

from .imaging import png_data_uri, to_uint8


def collimation(pixels: np.ndarray, max_share: float = 0.35) -> tuple[int, int, int, int]:
    """Rows/columns of unexposed collimation border (top, bottom, left, right): the film's edge lines that are
    (nearly) all at the brightest level, as a collimated film shows them (bone bright: unexposed is white)."""
    p = np.asarray(pixels, np.float32)
    h, w = p.shape
    step = max(1, max(h, w) // 1024)
    q = p[::step, ::step]
    lo, hi = np.percentile(q, [1, 99.9])
    white = q >= hi - 0.03 * (hi - lo)

    def run(lines):  # how many leading lines are white
        share = lines.mean(1)
        bad = np.flatnonzero(share < 0.97)
        return int(bad[0]) if len(bad) else len(share)

    cap_r, cap_c = int(white.shape[0] * max_share), int(white.shape[1] * max_share)
    top, bottom = min(run(white), cap_r), min(run(white[::-1]), cap_r)
    left, right = min(run(white.T), cap_c), min(run(white.T[::-1]), cap_c)
    return top * step, bottom * step, left * step, right * step


def shuttered(pixels: np.ndarray) -> np.ndarray:
    """A display copy with the collimation border black (a PACS display shutter), so a dark viewer shows no white
    frame around the exposed film. The pixels the model reads are never changed."""
    t, b, l, r = collimation(pixels)
    if not (t or b or l or r):
        return pixels
    out = np.array(pixels, copy=True)
    h, w = out.shape
    out[:t], out[h - b:], out[:, :l], out[:, w - r:] = 0, 0, 0, 0
    return out


def viewer_html(pixels: np.ndarray, max_side: int = 1400, min_height: int = 320, label: str = "") -> str:
    """The viewer page for a radiograph (float pixels, bone bright; collimation shown black)."""
    src = png_data_uri(to_uint8(shuttered(pixels), max_side))
    return _PAGE.replace("__SRC__", src).replace("__MIN__", str(int(min_height))).replace("__LABEL__", _html.escape(label))


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><style>
html,body{margin:0;height:100%;background:#000;overflow:hidden;font:12px system-ui,sans-serif;color:#ccc}
#wrap{position:relative;width:100%;height:100%;background:#000;border-radius:6px;outline:none}
#wrap:focus{box-shadow:inset 0 0 0 2px #4a7dff}
canvas{display:block;width:100%;height:100%;cursor:crosshair}
.hud{position:absolute;left:8px;bottom:6px;pointer-events:none;text-shadow:0 0 3px #000}
.help{position:absolute;left:8px;right:8px;top:6px;pointer-events:none;text-shadow:0 0 3px #000;color:#999;font-size:11px}
</style></head><body>
<div id="wrap" tabindex="0" role="img" aria-label="Radiograph viewer: __LABEL__" data-testid="kneeage-viewer">
<canvas id="c"></canvas><div class="hud" id="hud"></div>
<div class="help">drag: window/level · shift+drag: pan · wheel or +/−: zoom · 0: fit · R: reset · I: invert</div></div>
<script>
(function(){
const MIN=__MIN__, wrap=document.getElementById('wrap'), cv=document.getElementById('c'), hud=document.getElementById('hud');
const ctx=cv.getContext('2d');
// Fill the height left below the viewer in the browser window (the iframe is ours to size).
function fitFrame(){
  const fe=window.frameElement; if(!fe) return;
  try{
    const top=fe.getBoundingClientRect().top+ (window.parent.scrollY||0);
    const h=Math.max(MIN, Math.floor(window.parent.innerHeight-top-24));
    if(Math.abs(parseInt(fe.style.height||'0')-h)>2){fe.style.height=h+'px'; fe.setAttribute('height', h);}
  }catch(e){}
}
const img=new Image(); let gray=null, iw=0, ih=0, off=null, offctx=null, out=null;
let scale=1, ox=0, oy=0, win=256, lev=128, inv=false, fitted=true;
function lut(){
  const t=new Uint8ClampedArray(256), lo=lev-win/2;
  for(let v=0;v<256;v++){let y=(v-lo)/Math.max(win,1)*255; if(inv) y=255-y; t[v]=y;}
  return t;
}
function render(){
  if(!gray) return;
  const t=lut(), d=out.data;
  for(let i=0,j=0;i<gray.length;i++,j+=4){const y=t[gray[i]]; d[j]=d[j+1]=d[j+2]=y; d[j+3]=255;}
  offctx.putImageData(out,0,0); draw();
}
function size(){
  const r=wrap.getBoundingClientRect(), dpr=window.devicePixelRatio||1;
  cv.width=Math.max(1,Math.round(r.width*dpr)); cv.height=Math.max(1,Math.round(r.height*dpr));
  if(fitted) fit(); else draw();
}
function fit(){
  if(!iw) return; scale=Math.min(cv.width/iw, cv.height/ih); ox=(cv.width-iw*scale)/2; oy=(cv.height-ih*scale)/2; fitted=true; draw();
}
function draw(){
  ctx.setTransform(1,0,0,1,0,0); ctx.fillStyle='#000'; ctx.fillRect(0,0,cv.width,cv.height);
  if(!off) return; ctx.imageSmoothingEnabled=scale<4;
  ctx.setTransform(scale,0,0,scale,ox,oy); ctx.drawImage(off,0,0);
  hud.textContent='zoom '+Math.round(scale/Math.min(cv.width/iw, cv.height/ih)*100)+'% · W '+Math.round(win)+' L '+Math.round(lev)+(inv?' · inverted':'');
  const b=document.body.dataset; b.scale=scale; b.fit=fitted?'1':'0'; b.win=Math.round(win); b.lev=Math.round(lev);
  b.drawn=[ox,oy,iw*scale,ih*scale,cv.width,cv.height].map(v=>Math.round(v)).join(',');  // image and canvas, device px
}
function zoom(f, cx, cy){
  const dpr=window.devicePixelRatio||1; cx=(cx===undefined?cv.width/2:cx*dpr); cy=(cy===undefined?cv.height/2:cy*dpr);
  const fitS=Math.min(cv.width/iw, cv.height/ih), ns=Math.min(Math.max(scale*f, fitS*0.5), fitS*16);
  ox=cx-(cx-ox)*ns/scale; oy=cy-(cy-oy)*ns/scale; scale=ns; fitted=false; draw();
}
function pan(dx,dy){const dpr=window.devicePixelRatio||1; ox+=dx*dpr; oy+=dy*dpr; fitted=false; draw();}
img.onload=function(){
  iw=img.naturalWidth; ih=img.naturalHeight; off=document.createElement('canvas'); off.width=iw; off.height=ih;
  offctx=off.getContext('2d'); offctx.drawImage(img,0,0); const px=offctx.getImageData(0,0,iw,ih);
  gray=new Uint8Array(iw*ih); for(let i=0;i<gray.length;i++) gray[i]=px.data[i*4];
  out=offctx.createImageData(iw,ih); size(); render(); document.body.dataset.ready='1';
};
let drag=null;
cv.addEventListener('mousedown',e=>{wrap.focus(); drag={x:e.clientX,y:e.clientY,pan:e.shiftKey||e.button!==0,win:win,lev:lev}; e.preventDefault();});
window.addEventListener('mousemove',e=>{
  if(!drag) return; const dx=e.clientX-drag.x, dy=e.clientY-drag.y;
  if(drag.pan){pan(dx,dy); drag.x=e.clientX; drag.y=e.clientY;}
  else{win=Math.min(Math.max(drag.win+dx*2,2),512); lev=Math.min(Math.max(drag.lev-dy,-128),384); render();}
});
window.addEventListener('mouseup',()=>{drag=null;});
cv.addEventListener('contextmenu',e=>e.preventDefault());
cv.addEventListener('wheel',e=>{e.preventDefault(); const r=cv.getBoundingClientRect(); zoom(Math.pow(1.0015,-e.deltaY), e.clientX-r.left, e.clientY-r.top);},{passive:false});
cv.addEventListener('dblclick',()=>fit());
wrap.addEventListener('keydown',e=>{
  const k=e.key; let used=true;
  if(k==='+'||k==='=') zoom(1.25); else if(k==='-'||k==='_') zoom(0.8); else if(k==='0') fit();
  else if(k==='ArrowLeft') pan(40,0); else if(k==='ArrowRight') pan(-40,0); else if(k==='ArrowUp') pan(0,40); else if(k==='ArrowDown') pan(0,-40);
  else if(k==='r'||k==='R'){win=256; lev=128; inv=false; render();} else if(k==='i'||k==='I'){inv=!inv; render();}
  else used=false;
  if(used) e.preventDefault();
});
new ResizeObserver(size).observe(wrap);
try{ window.parent.addEventListener('resize', fitFrame); }catch(e){}
fitFrame(); setTimeout(fitFrame, 300); setTimeout(fitFrame, 1200);
img.src="__SRC__";
})();
</script></body></html>"""
