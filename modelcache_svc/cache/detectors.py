"""The built-in cacheability detectors: which questions must not be cached.

Three classes, English and Chinese, all precompiled regular expressions plus
checksums (no model): a question costs a few microseconds (docs/cacheability.md
has the measurement and the labelled set behind the rules).

- ``pii``: an e-mail address, a phone number, a card number that passes the
  Luhn check, a Chinese resident ID (18 characters, GB 11643 check digit and a
  plausible birth date), a US SSN (AAA-GG-SSSS, valid ranges), an IBAN (mod-97).
  A number that fails its checksum is not PII: order numbers and arithmetic stay.
- ``user_specific``: the right answer depends on data about the asker that the
  next asker does not share — their order, account, bill, balance, booking
  ("Where is my package?", "我的退款什么时候到账"), the conversation so far ("What
  did I ask earlier?"), who or where they are ("What's my name?"). How-to
  questions are general: "How do I reset my password?" has one answer for
  everyone, and so have personal situations told in the question ("Why is my
  dog eating grass?"). "What is my name in Japanese?" asks for a translation and
  is general too.
- ``time_sensitive``: the answer goes stale within days — weather, date and
  time, scores, prices and rates, news, "latest" releases, "is it open now",
  countdowns. Era words alone ("problems India faces today", "现在这个社会")
  and history ("Who won the 2018 World Cup?") are general. Quoted text and
  translation requests are not read for time words ("Who wrote 'Tomorrow
  Never Dies'?", "昨天的英文怎么说").

A question may belong to several classes; ``detect`` returns every class found,
in the order pii, user_specific, time_sensitive.
"""

from __future__ import annotations

import re

PII = "pii"
USER_SPECIFIC = "user_specific"
TIME_SENSITIVE = "time_sensitive"
BUILT_IN_CLASSES = (PII, USER_SPECIFIC, TIME_SENSITIVE)
# Only this much of a question is read: the cost of a check stays bounded whatever is sent.
MAX_CHECKED_CHARS = 4096
MAX_WORDS_FOR_ACCOUNT = 30

_I = re.IGNORECASE
_A = re.ASCII

# -- pii ---------------------------------------------------------------------------------------
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}", _A)
# Digit runs with single separators between digits; bounded by anything but a letter or digit (Chinese
# text sits right next to numbers, so \b is no use here).
_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\+?)(\(?\d(?:[ ().-]{0,2}\d){6,22})([Xx]?)(?![0-9A-Za-z])", _A)
_SSN = re.compile(r"(?<![0-9])(\d{3})-(\d{2})-(\d{4})(?![0-9])", _A)
_NINE_DIGITS = re.compile(r"(?<![0-9])\d{9}(?![0-9])")
_SSN_WORDS = re.compile(r"\b(?:ssn|social security)\b", _I)
_PHONE_WORDS = re.compile(r"\b(?:call|phone|tel|telephone|mobile|cell|text|whatsapp|sms)\b|电话|手机|联系|短信|号码", _I)
_NANP = re.compile(r"^\(?[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}$", _A)
_IBAN = re.compile(r"(?<![0-9A-Za-z])([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)(?![0-9A-Za-z])", _A)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def cn_id_valid(text: str) -> bool:
    """18 characters, a plausible birth date, and the GB 11643 check digit."""
    if len(text) != 18 or not text[:17].isdigit():
        return False
    year, month, day = int(text[6:10]), int(text[10:12]), int(text[12:14])
    if not (1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31):
        return False
    check = _ID_CHECK[sum(int(c) * w for c, w in zip(text[:17], _ID_WEIGHTS)) % 11]
    return text[17].upper() == check


def ssn_valid(area: str, group: str, serial: str) -> bool:
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def card_shaped(digits: str) -> bool:
    """An issuer prefix and a length that go together (Visa, Mastercard, Maestro, Amex, Diners, JCB,
    Discover, UnionPay): a long number from a maths question passes Luhn one time in ten."""
    n, first, two = len(digits), digits[0], int(digits[:2])
    if first == "4":
        return n in (13, 16, 19)
    if first == "5" or first == "6":
        return 16 <= n <= 19
    if first == "2":
        return n == 16 and 2221 <= int(digits[:4]) <= 2720
    if two in (34, 37):
        return n == 15
    if two in (30, 36, 38, 39):
        return 14 <= n <= 16
    return two == 35 and 16 <= n <= 19


def _phone_or_card(sign: str, raw: str, digits: str, words: bool) -> bool:
    if len(set(digits)) <= 2:  # 0000000000, 10000000000: placeholders, not anyone's number
        return False
    if 13 <= len(digits) <= 19 and not sign and card_shaped(digits) and luhn_valid(digits):
        return True
    if sign == "+" and 8 <= len(digits) <= 15:
        return True
    # China mobile: 1[3-9] and 11 digits, alone or 3-4-4, optionally after 86.
    national = digits[2:] if len(digits) == 13 and digits.startswith("86") else digits
    if len(national) == 11 and national[0] == "1" and national[1] in "3456789":
        return True
    if _NANP.match(raw):
        return True
    # Bare digits read as a phone number only next to a word that says so.
    return words and 7 <= len(digits) <= 15


def has_pii(text: str) -> bool:
    if "@" in text and _EMAIL.search(text):
        return True
    if not any(ch.isdigit() for ch in text):
        return False  # every other kind holds digits (an IBAN its check digits)
    words: bool | None = None  # a phone word nearby: looked for only when bare digits need it
    for match in _NUMBER.finditer(text):
        sign, raw, x = match.groups()
        digits = "".join(ch for ch in raw if ch.isdigit())
        if x:
            if len(digits) == 17 and cn_id_valid(digits + x):
                return True
            continue
        if len(digits) == 18 and cn_id_valid(digits):
            return True
        if words is None and not sign and 7 <= len(digits) <= 15:
            words = _PHONE_WORDS.search(text) is not None
        if _phone_or_card(sign, raw, digits, bool(words)):
            return True
    if "-" in text and any(ssn_valid(*m) for m in _SSN.findall(text)):
        return True
    if _SSN_WORDS.search(text) and _NINE_DIGITS.search(text):
        return True
    return any(iban_valid(m) for m in _IBAN.findall(text))


# -- user_specific -------------------------------------------------------------------------------
# Things a service keeps about one customer.
_ACCOUNT_EN = (
    r"orders?|packages?|parcels?|shipments?|deliver(?:y|ies)|refunds?|returns?|bills?|invoices?|payments?|balance|"
    r"accounts?|subscriptions?|plan|bookings?|reservations?|appointments?|tickets?|claims?|applications?|"
    r"transactions?|purchases?|statements?|points|membership|credit limit|credit score|loans?|polic(?:y|ies)|"
    r"flights?|seat|cases?|complaints?|cart|transfers?|deposits?|withdrawals?|cards?|data usage|usage|"
    r"username|user name|password|pin|ip(?: address)?|location|tracking number|rewards|vacation days|"
    r"salary|paycheck|tax return|premium|installments?|due date|inbox|messages|emails|notifications|rent|lease|"
    r"tuition|fees|"
    r"phone number|account number|user id|boarding pass|wallet|coupons?"
)
_MY_ACCOUNT_EN = re.compile(rf"\b(?:my|our) (?:[\w'-]+ ){{0,2}}?(?:{_ACCOUNT_EN})\b")
# Always about this conversation or this user.
_MEMORY_EN = re.compile(
    r"\bwhat (?:did|have) i (?:just )?(?:ask|asked|say|said|tell|told|buy|bought|order|ordered|search|"
    r"searched|write|wrote|mention|mentioned)\b|\bremind me (?:what|of what|where|when)\b|"
    r"\bwhat was my (?:last|previous|first) (?:question|message)\b|"
    r"\b(?:summari[sz]e|recap) (?:what we|our (?:chat|conversation|discussion))\b|"
    r"\bwhat (?:we|you and i) (?:talked|discussed|spoke) about\b|\bwhere am i(?: now| right now)?\s*\??$|"
    r"\bdo i have (?:any )?(?:new |unread |pending |upcoming |outstanding )(?:\w+)|"
    r"\bhow (?:many|much) [\w ]{1,30} do i have (?:left|remaining)\b|\bhow much do i owe\b|"
    r"\bhow (?:many|much) (?:[\w-]+ ){0,2}(?:points|miles|credits|vacation days|leave|data|minutes|money|coins|"
    r"tokens|followers|balance) (?:[\w-]+ )?do i have\b|"
    r"\b(?:what|which) (?:[\w-]+ ){0,2}did i (?:buy|order|return|purchase|book|pay for|send|watch|listen to)\b|"
    r"\b(?:last|previous|first) (?:thing|question|message) (?:that )?i (?:asked|said|told|sent|wrote)\b|"
    r"\bwhich plan am i\b|\bam i (?:enrolled|registered|subscribed|approved|covered|booked) (?:for|on|in)\b"
)
# Who or where the asker is (read after translation requests: "What is my name in Japanese?" is general).
_IDENTITY_EN = re.compile(
    r"\bwhat(?:'s| is| was) my (?:name|ip(?: address)?|location|username|user name|e-?mail(?: address)?|"
    r"phone number|address|account number|user id)\b"
)
# A record of this customer named by its number: "a refund on order 88123".
_RECORD_ID = re.compile(
    r"\b(?:order|booking|ticket|account|invoice|case|claim|reservation|tracking|shipment|parcel|package)"
    r"(?: number| no\.?| id)?\s*(?:#|:)?\s*[a-z]{0,3}\d{4,}\b"
)
# How-to and advice: the same answer for everyone who asks these words.
_GENERAL_EN = re.compile(
    r"\bhow (?:do|can|could|should|would|does|did|to) (?:i|you|we|one|people)\b|\bhow to\b|"
    r"\bwhat (?:should|can|could) (?:i|we|you) do\b|\bwhat happens (?:if|when)\b|\bis it possible\b|"
    r"\b(?:best|easiest|fastest) way\b|\bways? to\b|\btips?\b|\bsteps? to\b|\bcan i\b|\bcould i\b|"
    r"\bshould i\b|\bexplain\b|\bhow long does\b|\bif (?:i|my|you|someone)\b|\bwhat if\b|"
    r"\b(?:will|would) (?:i|they|it|he|she)\b|\bcan (?:someone|anyone|a company|my|they|people|others)\b|"
    r"\bwhat does (?:it|this|that) mean\b|\bis (?:it|this) (?:normal|safe|legal)\b|\bdoes (?:the|a|an) \b"
)
_TRANSLATION = re.compile(
    r"\bin (?:japanese|chinese|mandarin|cantonese|korean|spanish|french|german|italian|portuguese|russian|"
    r"arabic|hindi|latin|greek|dutch|swedish|turkish|vietnamese|thai|english|sign language)\b|"
    r"\btranslat|\bhow do you say\b|\bspell\b|英文|英语|日语|韩语|法语|德语|翻译|怎么写|怎么读|什么意思|怎么说",
)
_ACCOUNT_ZH = (
    r"订单|快递|包裹|物流|退款|余额|账单|话费|积分|会员|航班|贷款|借款|额度|账户|帐户|账号|帐号|信用卡|银行卡|"
    r"转账|预约|工单|社保|公积金|花呗|借呗|微粒贷|还款|扣款|工资|保单|套餐|优惠券|购物车|密码|座位|工资条|审核|卡里|卡上"
)
_MY_ACCOUNT_ZH = re.compile(rf"我(?:的|们的)?[^，。？！,.?!]{{0,8}}?(?:{_ACCOUNT_ZH})")
_MEMORY_ZH = re.compile(
    r"我(?:刚才|刚刚|之前|上次|前面)(?:问|说|提到|讲)|(?:刚才|刚刚|之前|上次)我(?:问|说|提到)|我们(?:刚才|之前)聊|"
    r"(?:^|[，,。！？!?\s])我叫什么(?:名字)?[？?吗呀啊呢]*$|我叫什么名字|我在哪[里儿]?[？?]?$|我的ip|我还有多少|"
    r"我[^，。？！]{0,6}(?:流量|话费|余额|积分)(?:还)?(?:剩|有)(?:多少|几)|"
    r"我(?:上个月|上周|昨天|之前|最近)?(?:买|订|下单)(?:了|过)什么|我[^。？！?!]{0,12}怎么还没"
)
_GENERAL_ZH = re.compile(
    r"(?:怎么|如何|怎样|咋)(?:才能|可以|能|去)?(?:查询|查看|查|修改|更改|申请|取消|注销|设置|开通|办理|绑定|解绑|找回|"
    r"重置|退订|还款|还(?![没不是在])|删除|删|用|开|关|弄|办|使用|关闭|开启|充值|提现|换|做|写|说|联系|投诉|兑换|提高|增加|支付|付款|登录|注册|"
    r"下载|选|让|跟|和|改)|怎么办|忘了|忘记|可以[^，。？！]{0,12}[吗么]|能不能|能否|可不可以|一定要|应该怎么|有什么后果|是怎么算|怎么算"
)


def is_user_specific(text: str, lower: str, cjk: bool) -> bool:
    padded = f" {lower} "
    if (" i " in padded or "remind" in lower or "what was my" in lower or "summar" in lower or "recap" in lower
            or "what we " in lower) and _MEMORY_EN.search(lower):
        return True
    if cjk and "我" in text and _MEMORY_ZH.search(text):
        return True
    mine = " my " in padded or " our " in padded
    candidate = (
        (mine and _IDENTITY_EN.search(lower) is not None)
        or (any(ch.isdigit() for ch in lower) and _RECORD_ID.search(lower) is not None)
        # A long question tells its own situation ("I am 28 ... my salary is ... a good move?"): general.
        or (mine and lower.count(" ") < MAX_WORDS_FOR_ACCOUNT and _MY_ACCOUNT_EN.search(lower) is not None
            and not _GENERAL_EN.search(lower))
        or (cjk and "我" in text and _MY_ACCOUNT_ZH.search(text) is not None and not _GENERAL_ZH.search(text))
    )
    return candidate and not _TRANSLATION.search(lower)


# -- time_sensitive -----------------------------------------------------------------------------
_QUOTED = re.compile(r"'[^']{1,80}'(?!\w)|\"[^\"]{1,80}\"|“[^”]{1,80}”|‘[^’]{1,80}’|《[^》]{1,80}》|「[^」]{1,80}」")
_STRONG_EN = re.compile(
    r"\b(?:breaking news|live scores?)\b|\bwhat time is it\b|\bwhat day is (?:it|today)\b|"
    r"\bwhat(?:'s| is) (?:the )?(?:date|day)(?: today)?\s*\??$|\bwhat(?:'s| is) today\b|"
    r"\bwhat(?:'s| is) the (?:current )?time (?:now|in [a-z ]+)?\s*\??$|"
    r"\bwhat time (?:is|does|do|will) (?:[\w-]+ ){1,5}(?:today|tonight|tomorrow)\b|"
    r"\bhow (?:many|much) (?:days|weeks|hours|time|longer) (?:left )?(?:until|till|before|to go)\b|"
    r"\bwhat(?:'s| is) the score\b|\bwhen is the next (?:train|bus|flight|game|match|episode|launch|race|ferry)\b|"
    r"\bis it (?:going to )?(?:rain|snow)(?:ing)?\b|\bwill it (?:rain|snow)\b|"
    r"\bcurrent (?:[a-z]+ ){0,4}?(?:price|prices|rate|rates|score|weather|news|"
    r"president|prime minister|ceo|leader|temperature|champion|standings|ranking|value|status of the)\b"
)
# A time word and a topic within four words of each other: "weather today", "exchange rate ... today".
_NOW_EN = r"today|today's|now|tonight|tonight's|tomorrow|tomorrow's|yesterday|yesterday's|last night|" \
    r"this (?:morning|afternoon|evening|week|weekend)|right now|at the moment|latest|newest|most recent|currently"
_TOPIC_EN = (
    r"weather|forecast|temperature|rain|raining|snow|snowing|news|headlines?|prices?|rates?|scores?|game|"
    r"match|matches|results?|stocks?|shares?|market|markets|open|closed|traffic|date|version|release|update|"
    r"updates|iphone|episode|trends?|trending|air quality|aqi|exchange|bitcoin|btc|ethereum|euros?|yen|"
    r"rupees?|pounds?|yuan|movies|films|concerts|"
    r"president|prime minister|ceo|leader|leading|table|standings|mortgage|showing|on tv|schedule|"
    r"delays?|delayed|outage|election|polls?|champion|ranking|rankings|covid|cases|won|win|winning|sunset|sunrise"
)
_NOW_HINTS = ("today", "now", "tonight", "tomorrow", "yesterday", "last night", "this ", "at the moment", "latest",
              "newest", "most recent", "currently")
_ANY_NOW_EN = re.compile(rf"\b(?:{_NOW_EN})\b")
_NEAR_EN = re.compile(
    rf"\b(?:{_NOW_EN})\b\W+(?:[\w'-]+\W+){{0,4}}?(?:{_TOPIC_EN})\b|"
    rf"\b(?:{_TOPIC_EN})\b\W+(?:[\w'-]+\W+){{0,4}}?(?:{_NOW_EN})\b"
)
_STRONG_ZH = re.compile(
    r"最新[^，。？！,.?!]{0,6}?(?:电影|电视剧|歌|专辑|手机|版本|款|型号)|"
    r"今晚|昨晚|昨夜|此刻|实时|热搜|头条|今日|几点了|星期几|周几|礼拜几|还有几天|还有多少天|倒计时|限行"
)
_NOW_ZH = re.compile(r"今天|明天|昨天|后天|现在|目前|当前|最新|这周末?|本周|这个月|近期|刚刚|最近")
_TOPIC_ZH = re.compile(
    r"天气|下雨|下雪|气温|温度|几号|日期|新闻|股|汇率|金价|油价|价格|行情|多少钱|比分|比赛|谁赢|赛果|开门|营业|上映|"
    r"版本|iphone|空气质量|涨|跌|排名|疫情|航班|比特币|票房"
)


def is_time_sensitive(lower: str, cjk: bool) -> bool:
    if "'" in lower or '"' in lower or (cjk and ("“" in lower or "《" in lower or "「" in lower)):
        lower = _QUOTED.sub(" ", lower)
    found = _STRONG_EN.search(lower) is not None or (
        any(word in lower for word in _NOW_HINTS) and _ANY_NOW_EN.search(lower) is not None
        and _NEAR_EN.search(lower) is not None
    )
    if not found and cjk:
        found = _STRONG_ZH.search(lower) is not None or (
            _NOW_ZH.search(lower) is not None and _TOPIC_ZH.search(lower) is not None
        )
    return found and not _TRANSLATION.search(lower)


def detect(question: str) -> tuple[str, ...]:
    """Every built-in class the question belongs to, in the order pii, user_specific, time_sensitive."""
    text = question[:MAX_CHECKED_CHARS].replace("’", "'").replace("‘", "'")
    lower = text.lower()
    cjk = not text.isascii()
    found = []
    if has_pii(text):
        found.append(PII)
    if is_user_specific(text, lower, cjk):
        found.append(USER_SPECIFIC)
    if is_time_sensitive(lower, cjk):
        found.append(TIME_SENSITIVE)
    return tuple(found)
