"""Opposites: two questions alike but for one word and its opposite ask for different answers ("How do I open
a bank account?" / "... close a bank account?", "sort ascending" / "descending", "highest" / "lowest").

Each pair names the two poles in every language the service routes (English, Chinese and the languages of
tests/data/multilingual.jsonl), a form ending in ``*`` matching any word it begins ("open*": opens, opened,
opening). Words of Latin or Cyrillic script match whole words; others (CJK, Devanagari, Arabic, Thai) as
substrings, since they are not split into words here. The guard (matching.py) vetoes a candidate when one
text names a pole and not its opposite while the other names the opposite and not that pole: a substitution,
never a mere absence ("open an account" / "account opening steps" is one question).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_PAIRS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    # open / close (an account, a file, a port)
    (("open", "opens", "opened", "opening", "abrir", "abre", "abro", "abierta", "abierto", "ouvrir", "ouvre",
      "ouverture", "öffnen", "offnen", "eröffnen", "eroffnen", "aprire", "apro", "apre", "abertura", "открыть",
      "открыти", "відкрити", "otworzyć", "otworzyc", "założyć", "zalozyc", "openen", "açmak", "acmak", "açma",
      "membuka", "buka", "öppna", "oppna", "打开", "开通", "开户", "開設", "開く", "열", "खोल", "فتح", "mở"),
     ("close", "closes", "closed", "closing", "cerrar", "cierra", "cierro", "cerrada", "cerrado", "fermer", "ferme",
      "fermeture", "schließen", "schliessen", "kündigen", "kundigen", "chiudere", "chiudo", "chiude", "fechar",
      "encerrar", "закрыть", "закрити", "zamknąć", "zamknac", "sluiten", "opzeggen", "kapatmak", "kapatma",
      "menutup", "tutup", "stänga", "stanga", "avsluta", "关闭", "注销", "销户", "閉じ", "해지", "닫", "बंद",
      "إغلاق", "اغلاق", "غلق", "đóng")),
    # highest / lowest; maximum / minimum
    (("highest", "maximum", "max", "más alto", "mas alto", "máximo", "maximo", "le plus haut", "la plus haute",
      "höchste*", "hochste*", "più alto", "piu alto", "mais alto", "самый высокий", "максимальн*",
      "najwyższ*", "najwyzsz*", "hoogste", "en yüksek", "en yuksek", "tertinggi", "högsta", "hogsta", "最高", "最大",
      "सबसे ऊँचा", "सबसे ऊंचा", "सबसे अधिक", "أعلى", "cao nhất"),
     ("lowest", "minimum", "min", "más bajo", "mas bajo", "mínimo", "minimo", "le plus bas", "la plus basse",
      "niedrigste*", "più basso", "piu basso", "mais baixo", "самый низкий", "минимальн*", "najniższ*",
      "najnizsz*", "laagste", "en düşük", "en dusuk", "terendah", "lägsta", "lagsta", "最低", "最小",
      "सबसे नीचा", "सबसे कम", "أدنى", "أقل", "thấp nhất")),
    # ascending / descending
    (("ascending", "ascendente", "croissant", "aufsteigend", "crescente", "по возрастанию", "rosnąco",
      "rosnaco", "oplopend", "artan", "menaik", "stigande", "升序", "正序", "从小到大", "आरोही", "تصاعدي", "tăng dần"),
     ("descending", "descendente", "décroissant", "decroissant", "absteigend", "decrescente", "по убыванию",
      "malejąco", "malejaco", "aflopend", "azalan", "menurun", "fallande", "降序", "倒序", "逆序", "从大到小", "अवरोही",
      "تنازلي", "giảm dần")),
    # create / delete
    (("create", "creates", "created", "creating", "crear", "créer", "creer", "erstellen", "anlegen", "creare",
      "criar", "создать", "створити", "utworzyć", "utworzyc", "aanmaken", "oluşturmak", "olusturmak",
      "membuat", "skapa", "创建", "新建", "作成", "생성", "बनाएं", "बनाना", "إنشاء", "انشاء"),
     ("delete", "deletes", "deleted", "deleting", "eliminar", "borrar", "supprimer", "löschen", "loschen",
      "cancellare", "excluir", "apagar", "удалить", "видалити", "usunąć", "usunac", "verwijderen", "silmek",
      "menghapus", "hapus", "radera", "删除", "删掉", "削除", "삭제", "हटाएं", "हटाना", "डिलीट", "حذف")),
    # buy / sell
    (("buy", "buying", "purchase", "comprar", "acheter", "achat", "kaufen", "comprare", "купить", "купити",
      "kupić", "kupic", "kopen", "satın al*", "satin al*", "membeli", "beli", "köpa", "kopa", "买入", "购买",
      "खरीद", "شراء"),
     ("sell", "selling", "vender", "vendre", "vente", "verkaufen", "vendere", "продать", "продати",
      "sprzedać", "sprzedac", "verkopen", "satmak", "satış", "menjual", "jual", "sälja", "salja", "卖出", "出售",
      "बेच", "بيع")),
    # increase / decrease
    (("increase", "increases", "increasing", "raise", "aumentar", "augmenter", "erhöhen", "erhohen",
      "aumentare", "увеличить", "збільшити", "zwiększyć", "zwiekszyc", "verhogen", "artırmak", "artirmak",
      "menaikkan", "meningkatkan", "öka", "oka", "增加", "提高", "बढ़ा", "زيادة"),
     ("decrease", "decreases", "decreasing", "reduce", "lower", "disminuir", "reducir", "diminuer", "réduire",
      "reduire", "senken", "verringern", "diminuire", "ridurre", "уменьшить", "зменшити", "zmniejszyć",
      "zmniejszyc", "verlagen", "azaltmak", "menurunkan", "mengurangi", "minska", "减少", "降低", "घटा",
      "تقليل", "خفض")),
    # upload / download; import / export
    (("upload", "uploading", "subir", "téléverser", "hochladen", "caricare", "carregar", "загрузить на",
      "上传", "अपलोड"),
     ("download", "downloading", "descargar", "télécharger", "telecharger", "herunterladen", "scaricare",
      "baixar", "скачать", "下载", "डाउनलोड")),
    (("import", "importar", "importer", "importieren", "importare", "导入"),
     ("export", "exportar", "exporter", "exportieren", "esportare", "导出")),
    # install / uninstall; enable / disable
    (("install", "installing", "instalar", "installer", "installieren", "installare", "установить", "安装"),
     ("uninstall", "uninstalling", "desinstalar", "désinstaller", "desinstaller", "deinstallieren",
      "disinstallare", "удалить программу", "卸载")),
    (("enable", "enabling", "activar", "activer", "aktivieren", "attivare", "ativar", "включить", "启用", "开启",
      "设置"),
     ("disable", "disabling", "desactivar", "désactiver", "desactiver", "deaktivieren", "disattivare",
      "desativar", "отключить", "禁用", "停用", "取消")),
    # before / after (a workout, an interview, running)
    (("before", "prior to", "antes de", "avant", "bevor", "prima di", "перед", "之前", "以前", "前吃", "前需要",
      "前要", "前应该", "前可以", "前做"),
     ("after", "después de", "despues de", "après", "apres", "nachdem", "dopo", "после", "之后", "以后", "后吃",
      "后需要", "后要", "后应该", "后可以", "后做")),
    # longest / shortest; most / fewest
    (("longest", "más largo", "mas largo", "le plus long", "längste*", "langste*", "più lungo", "piu lungo",
      "mais longo", "самый длинный", "最长"),
     ("shortest", "más corto", "mas corto", "le plus court", "kürzeste*", "kurzeste*", "più corto", "piu corto",
      "mais curto", "самый короткий", "最短")),
    (("最多", "至多"), ("最少", "至少")),
    # speed up / slow down (a video, a song)
    (("speed up", "faster", "acelerar", "accélérer", "accelerer", "beschleunigen", "velocizzare", "ускорить",
      "倍速", "加速", "快进", "加快"),
     ("slow down", "slower", "ralentizar", "ralentir", "verlangsamen", "rallentare", "замедлить", "慢速", "减速",
      "慢放", "放慢")),
    # male / female
    (("male", "men", "hombre", "homme", "mann", "uomo", "homem", "мужчин*", "男性", "男人"),
     ("female", "women", "mujer", "femme", "frau", "donna", "mulher", "женщин*", "女性", "女人")),
    # encrypt / decrypt; compress / decompress
    (("encrypt", "encrypting", "encryption", "cifrar", "chiffrer", "verschlüsseln", "加密"),
     ("decrypt", "decrypting", "decryption", "descifrar", "déchiffrer", "entschlüsseln", "解密")),
    (("compress", "compressing", "comprimir", "compresser", "komprimieren", "压缩"),
     ("decompress", "extract", "unzip", "descomprimir", "décompresser", "entpacken", "解压")),
)

_SPLIT_SCRIPT = re.compile(r"[A-Za-z\u00c0-\u024f\u0400-\u04ff]")


def _pattern(form: str) -> re.Pattern[str]:
    prefix = form.endswith("*")
    word = re.escape(form.rstrip("*"))
    if _SPLIT_SCRIPT.search(form):  # Latin or Cyrillic: whole words
        return re.compile(rf"(?<!\w){word}" + ("" if prefix else r"(?!\w)"))
    return re.compile(word)


# Per pole: its forms' letters (a form can match only where they stand: a substring test in C, ~0.1 us) and
# the pattern that holds it to whole words. Most texts name no pole, and the pattern runs only where a form's
# letters are in the text: the guard read every candidate through 58 patterns before (~1.2 ms a text).
_POLES = tuple(
    (k, side, tuple(sorted({f.rstrip("*") for f in forms})), re.compile("|".join(_pattern(f).pattern for f in forms)))
    for k, pair in enumerate(_PAIRS) for side, forms in enumerate(pair)
)


@lru_cache(maxsize=4096)
def poles(text: str) -> frozenset[tuple[int, int]]:
    """The (pair, side) poles a text names."""
    low = unicodedata.normalize("NFKC", text).lower()
    return frozenset((k, side) for k, side, letters, pattern in _POLES
                     if any(form in low for form in letters) and pattern.search(low))


def opposite(query: str, candidate: str) -> bool:
    """True when one text names a pole and the other its opposite, each without the other's."""
    a, b = poles(query), poles(candidate)
    if not a or not b:
        return False
    for k, side in a:
        other = (k, 1 - side)
        if other not in a and other in b and (k, side) not in b:
            return True
    return False
