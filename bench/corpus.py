"""A deterministic corpus of agency-like feeds.

Feed ``f`` of a corpus is a function of ``(seed, f, round, base time)`` alone, so the server,
the runners and the checks can all rebuild the same bytes without passing them around:

- RSS 2.0, Atom 1.0 and RSS 1.0 (RDF) in a fixed mix, English and Russian, a third of the
  Russian RSS/RDF feeds in windows-1251 (declared in the prolog only, as many agencies do);
- 30–100 items per feed, HTML descriptions (paragraphs, links with tracking parameters,
  images, now and then a script or an inline style, "Go back"/"Читать далее" trailers),
  about 1.8 KB of feed per item;
- about 10% of the items are copies of stories carried by other feeds of the same language,
  half of them under the story's own URL with tracking parameters (same canonical URL),
  half under the copying agency's URL with the same text (same content);
- a share of the stories mention the example config's topic terms (CSTO, СНГ, EAEU …).

Rounds model a feed that moves on: in round ``k`` the feeds with ``(f + 7k) % 10 == 0``
(exactly 10% of any block of ten feeds) publish five new items, drop the five oldest and
edit one title.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape, quoteattr

AGENCIES = (
    "belta",
    "tass",
    "sputnik",
    "kazinform",
    "akipress",
    "armenpress",
    "cronos",
    "trend",
    "azertag",
    "kabar",
    "khovar",
    "uzdaily",
    "interfax",
    "apa",
    "newsam",
    "tengri",
    "dunyo",
    "mignews",
    "eurasia",
    "cisinfo",
)
NEW_PER_MUTATION = 5
DUPLICATE_SHARE = 0.10
BLOCK = 200  # feeds share stories within blocks of 200, so any such prefix has ~10% copies
POOL = 330  # shared stories per block and language: about two copies each

EN_WORDS = [
    "government",
    "minister",
    "president",
    "delegation",
    "meeting",
    "talks",
    "agreement",
    "cooperation",
    "trade",
    "economy",
    "investment",
    "project",
    "region",
    "border",
    "security",
    "forces",
    "ministry",
    "council",
    "summit",
    "visit",
    "parliament",
    "deputy",
    "official",
    "statement",
    "report",
    "development",
    "energy",
    "gas",
    "oil",
    "pipeline",
    "railway",
    "transport",
    "logistics",
    "agriculture",
    "grain",
    "harvest",
    "export",
    "import",
    "tariff",
    "customs",
    "industry",
    "factory",
    "plant",
    "production",
    "growth",
    "inflation",
    "budget",
    "bank",
    "currency",
    "exchange",
    "partners",
    "relations",
    "strategic",
    "program",
    "initiative",
    "conference",
    "forum",
    "exhibition",
    "festival",
    "culture",
    "education",
    "university",
    "students",
    "science",
    "research",
    "technology",
    "digital",
    "platform",
    "infrastructure",
    "construction",
    "bridge",
    "highway",
    "airport",
    "flights",
    "tourism",
    "health",
    "hospital",
    "vaccine",
    "doctors",
    "weather",
    "drought",
    "flood",
    "earthquake",
    "rescue",
    "emergency",
    "police",
    "court",
    "election",
    "campaign",
    "voters",
    "reform",
    "law",
    "amendment",
    "decree",
    "signed",
    "approved",
    "discussed",
    "announced",
    "reported",
    "confirmed",
    "expected",
    "planned",
    "launched",
    "opened",
    "completed",
    "increased",
    "decreased",
    "strengthened",
    "expanded",
    "joint",
    "bilateral",
    "regional",
    "national",
    "international",
    "annual",
    "quarterly",
    "record",
    "historic",
    "new",
    "major",
    "key",
    "important",
]
RU_WORDS = [
    "правительство",
    "министр",
    "президент",
    "делегация",
    "встреча",
    "переговоры",
    "соглашение",
    "сотрудничество",
    "торговля",
    "экономика",
    "инвестиции",
    "проект",
    "регион",
    "граница",
    "безопасность",
    "министерство",
    "совет",
    "саммит",
    "визит",
    "парламент",
    "депутат",
    "заявление",
    "отчет",
    "развитие",
    "энергетика",
    "газ",
    "нефть",
    "трубопровод",
    "железная",
    "дорога",
    "транспорт",
    "логистика",
    "сельское",
    "хозяйство",
    "зерно",
    "урожай",
    "экспорт",
    "импорт",
    "тариф",
    "таможня",
    "промышленность",
    "завод",
    "производство",
    "рост",
    "инфляция",
    "бюджет",
    "банк",
    "валюта",
    "обмен",
    "партнеры",
    "отношения",
    "стратегический",
    "программа",
    "инициатива",
    "конференция",
    "форум",
    "выставка",
    "фестиваль",
    "культура",
    "образование",
    "университет",
    "студенты",
    "наука",
    "исследования",
    "технологии",
    "цифровой",
    "платформа",
    "инфраструктура",
    "строительство",
    "мост",
    "трасса",
    "аэропорт",
    "рейсы",
    "туризм",
    "здравоохранение",
    "больница",
    "вакцина",
    "врачи",
    "погода",
    "засуха",
    "наводнение",
    "землетрясение",
    "спасатели",
    "полиция",
    "суд",
    "выборы",
    "кампания",
    "избиратели",
    "реформа",
    "закон",
    "поправка",
    "указ",
    "подписал",
    "одобрил",
    "обсудили",
    "объявил",
    "сообщил",
    "подтвердил",
    "ожидается",
    "запланировано",
    "запущен",
    "открыт",
    "завершен",
    "вырос",
    "снизился",
    "укрепили",
    "расширили",
    "совместный",
    "двусторонний",
    "региональный",
    "национальный",
    "международный",
    "ежегодный",
    "рекордный",
    "исторический",
    "новый",
    "крупный",
    "ключевой",
    "важный",
]
EN_PLACES = [
    "Minsk",
    "Moscow",
    "Astana",
    "Bishkek",
    "Yerevan",
    "Baku",
    "Tashkent",
    "Dushanbe",
    "Ashgabat",
    "Almaty",
    "Brest",
    "Gomel",
    "Kazan",
    "Novosibirsk",
    "Samarkand",
    "Osh",
    "Gyumri",
    "Ganja",
    "Karaganda",
    "Vitebsk",
]
RU_PLACES = [
    "Минске",
    "Москве",
    "Астане",
    "Бишкеке",
    "Ереване",
    "Баку",
    "Ташкенте",
    "Душанбе",
    "Ашхабаде",
    "Алматы",
    "Бресте",
    "Гомеле",
    "Казани",
    "Новосибирске",
    "Самарканде",
    "Оше",
    "Гюмри",
    "Гяндже",
    "Караганде",
    "Витебске",
]
EN_TOPICS = (
    "the CSTO",
    "the Collective Security Treaty Organization",
    "the CIS",
    "the Security Council",
    "the EAEU",
    "the Eurasian Economic Union",
    "the Eurasian Economic Commission",
)
RU_TOPICS = ("ОДКБ", "СНГ", "Совета Безопасности", "ЕАЭС", "Евразийского экономического союза")
EN_BOILERPLATE = ("Go back", "Back to the all news", "Read more")
RU_BOILERPLATE = ("Читать далее", "Вернуться к списку новостей", "Подробнее")
TRACKING = ("utm_source=rss&utm_medium=feed", "utm_campaign=agency&ref=rss", "fbclid=x1y2z3")


@dataclass(frozen=True)
class FeedSpec:
    index: int
    id: str
    agency: int
    language: str  # "en" | "ru"
    kind: str  # "rss" | "atom" | "rdf"
    encoding: str  # "utf-8" | "windows-1251"
    items: int  # items in the feed window
    step_minutes: int  # time between two of its items

    @property
    def path(self) -> str:
        return f"/feeds/{self.id}.xml"

    @property
    def host(self) -> str:
        return f"{AGENCIES[self.agency % len(AGENCIES)]}.example"

    @property
    def content_type(self) -> str:
        media = {
            "rss": "application/rss+xml",
            "atom": "application/atom+xml",
            "rdf": "application/rdf+xml",
        }[self.kind]
        return media if self.encoding != "utf-8" else f"{media}; charset=utf-8"


@dataclass(frozen=True)
class Story:
    guid: str
    url: str
    title: str
    paragraphs: tuple[str, ...]
    category: str
    author: str
    image: str | None


@dataclass(frozen=True)
class Corpus:
    seed: int
    feeds: int
    base: datetime  # the newest round-0 item is published here

    def spec(self, f: int) -> FeedSpec:
        return feed_spec(self.seed, f)

    def specs(self, n: int | None = None) -> list[FeedSpec]:
        return [self.spec(f) for f in range(self.feeds if n is None else n)]

    def render(self, f: int, round_: int = 0) -> bytes:
        return render_feed(self, f, round_)


def rng(*key: object) -> random.Random:
    """A generator seeded by a string, so the corpus does not depend on PYTHONHASHSEED."""
    return random.Random(":".join(str(k) for k in key))


def feed_spec(seed: int, f: int) -> FeedSpec:
    r = rng(seed, "feed", f)
    language = "en" if f % 2 == 0 else "ru"
    roll = r.random()
    kind = "rss" if roll < 0.6 else "atom" if roll < 0.85 else "rdf"
    encoding = "utf-8"
    if language == "ru" and kind != "atom" and r.random() < 0.35:
        encoding = "windows-1251"
    agency = f % len(AGENCIES)
    return FeedSpec(
        index=f,
        id=f"{AGENCIES[agency]}-{language}-{f}",
        agency=agency,
        language=language,
        kind=kind,
        encoding=encoding,
        items=r.randint(30, 100),
        step_minutes=r.choice((5, 10, 15, 20, 30, 45, 60)),
    )


def mutated(f: int, round_: int) -> bool:
    return round_ > 0 and (f + 7 * round_) % 10 == 0


def mutations(f: int, round_: int) -> int:
    return sum(1 for k in range(1, round_ + 1) if mutated(f, k))


EN_SYLLABLES = [
    "ka",
    "ro",
    "ten",
    "mar",
    "vel",
    "son",
    "dis",
    "pre",
    "con",
    "tion",
    "ment",
    "al",
    "ic",
    "ber",
    "lan",
    "dor",
    "fin",
    "gra",
    "hol",
    "ist",
    "jen",
    "kor",
    "lum",
    "mon",
    "nor",
    "pol",
    "quin",
    "ras",
    "sil",
    "tor",
    "ur",
    "ves",
    "wil",
    "yor",
    "zen",
    "bra",
    "cle",
    "dro",
    "fle",
    "gri",
]
RU_SYLLABLES = [
    "ка",
    "ро",
    "ст",
    "ва",
    "ни",
    "ко",
    "ле",
    "ми",
    "на",
    "ов",
    "ть",
    "ра",
    "те",
    "ли",
    "по",
    "до",
    "за",
    "бе",
    "ре",
    "се",
    "ве",
    "ку",
    "зо",
    "гу",
    "да",
    "ля",
    "мо",
    "но",
    "то",
    "со",
    "хо",
    "чи",
    "ше",
    "жи",
    "лю",
    "ры",
    "бы",
    "ды",
    "вы",
    "пы",
]
RU_ENDINGS = ("ость", "ение", "ский", "ной", "ами", "ого", "ому", "ия", "ов", "ых")
VOCABULARY = 20_000  # invented words per language: real copy rarely repeats words by chance
NAMES = 3_000


@functools.lru_cache(maxsize=4)
def vocabulary(language: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Invented words and surnames, so different stories share few words, as real ones do."""
    r = rng("vocabulary", language)
    syllables = EN_SYLLABLES if language == "en" else RU_SYLLABLES

    def word(parts: int) -> str:
        w = "".join(r.choice(syllables) for _ in range(parts))
        if language == "ru" and r.random() < 0.5:
            w += r.choice(RU_ENDINGS)
        return w

    words = tuple(word(r.randint(2, 4)) for _ in range(VOCABULARY))
    names = tuple(word(r.randint(3, 4)).capitalize() for _ in range(NAMES))
    return words, names


def _sentence(
    r: random.Random, language: str, place: str | None, names: list[str], topical: str | None
) -> str:
    common = EN_WORDS if language == "en" else RU_WORDS
    words, _ = vocabulary(language)
    chosen = []
    for _ in range(r.randint(9, 16)):
        if r.random() < 0.35:
            chosen.append(r.choice(common))
        else:
            chosen.append(words[int(len(words) * r.random() ** 2)])
    if place:
        chosen.insert(r.randrange(len(chosen)), ("in " if language == "en" else "в ") + place)
    if names and r.random() < 0.5:
        chosen.insert(r.randrange(1, len(chosen)), r.choice(names))
    if topical:
        chosen.insert(r.randrange(len(chosen)), topical)
    if r.random() < 0.3:
        chosen.append(f"{r.randint(2, 98)}.{r.randint(0, 9)}%")
    text = " ".join(chosen)
    return text[0].upper() + text[1:] + "."


def _story(seed: int, language: str, key: str, url: str) -> Story:
    """One story: a place, a name or two, sometimes a topic term; 2–4 paragraphs."""
    r = rng(seed, "story", language, key)
    roll = r.random()
    topical = None
    if roll < 0.12:
        topical = r.choice(EN_TOPICS if language == "en" else RU_TOPICS[:3])
    elif roll < 0.2:
        topical = r.choice(EN_TOPICS[4:] if language == "en" else RU_TOPICS[3:])
    place = r.choice(EN_PLACES if language == "en" else RU_PLACES)
    _, all_names = vocabulary(language)
    names = [r.choice(all_names) for _ in range(r.randint(0, 2))]
    title = _sentence(r, language, place, names, topical).rstrip(".")
    words = title.split()[: r.randint(7, 12)]
    while words[-1] in ("in", "в"):
        words.pop()
    title = " ".join(words)
    paragraphs = tuple(
        " ".join(
            _sentence(
                r, language, place if n == k == 0 else None, names, topical if n == k == 0 else None
            )
            for k in range(r.randint(2, 3))
        )
        for n in range(r.randint(2, 4))
    )
    words = EN_WORDS if language == "en" else RU_WORDS
    image = f"/images/{key}.jpg" if r.random() < 0.4 else None
    return Story(
        guid=key,
        url=url,
        title=title,
        paragraphs=paragraphs,
        category=r.choice(words).capitalize(),
        author=r.choice(("Staff", "Newsdesk", "Редакция", "Correspondent")),
        image=image,
    )


@functools.cache
def _slot_plan(seed: int, f: int, j: int) -> tuple[int, bool, str] | None:
    """For a copy slot: (shared story, under the story's own URL?, tracking query); else None."""
    r = rng(seed, "slot", f, j)
    if r.random() >= DUPLICATE_SHARE:
        return None
    return r.randrange(POOL), r.random() < 0.5, r.choice(TRACKING)


def slot_story(corpus_seed: int, spec: FeedSpec, j: int) -> Story:
    """The story in slot ``j`` of a feed's infinite item stream."""
    own_url = f"https://{spec.host}/{spec.language}/news/{spec.index}-{j}.html"
    plan = _slot_plan(corpus_seed, spec.index, j)
    if plan is not None:
        s, same_url, tracking = plan
        block = spec.index // BLOCK
        origin = AGENCIES[s % len(AGENCIES)]
        story_url = f"https://{origin}.example/{spec.language}/story/{block}-{s}.html"
        shared = _story(corpus_seed, spec.language, f"shared-{block}-{s}", story_url)
        if same_url and spec.kind != "rdf":
            # A feed that already carried this story keeps its own URL for the second copy:
            # one URL under two GUIDs would be one item to some readers and two to others.
            earlier = (_slot_plan(corpus_seed, spec.index, k) for k in range(max(0, j - 120), j))
            same_url = not any(p is not None and p[0] == s for p in earlier)
        # the story's own URL with tracking parameters (one canonical URL), or the copying
        # agency's URL with the same text; RDF items are known by their link, so always the latter
        url = f"{story_url}?{tracking}" if same_url and spec.kind != "rdf" else own_url
        return Story(
            guid=f"{spec.id}/{j}",
            url=url,
            title=shared.title,
            paragraphs=shared.paragraphs,
            category=shared.category,
            author=shared.author,
            image=shared.image,
        )
    story = _story(corpus_seed, spec.language, f"{spec.index}-{j}", own_url)
    return Story(
        guid=f"{spec.id}/{j}",
        url=f"{own_url}?{TRACKING[j % len(TRACKING)]}" if j % 4 == 0 else own_url,
        title=story.title,
        paragraphs=story.paragraphs,
        category=story.category,
        author=story.author,
        image=story.image,
    )


def description_html(spec: FeedSpec, story: Story, j: int) -> str:
    """An agency's HTML description: what the sanitizer and the boilerplate rules face."""
    parts: list[str] = []
    if story.image:
        parts.append(
            f'<p><img src="{story.image}" alt="" width="640" height="360" '
            f'style="float:left;margin:4px"/></p>'
        )
    for n, text in enumerate(story.paragraphs):
        if n == 1:
            words = text.split(" ")
            cut = len(words) // 2
            text = (
                " ".join(words[:cut])
                + f' <a href="/{spec.language}/news/{spec.index}-{max(0, j - 1)}.html?'
                + f'{TRACKING[n % len(TRACKING)]}" target="_blank">'
                + " ".join(words[cut : cut + 3])
                + "</a> "
                + " ".join(words[cut + 3 :])
            )
        parts.append(f"<p>{text}</p>")
    if j % 9 == 0:
        parts.append('<script type="text/javascript">window.stats && stats.hit("rss");</script>')
    if j % 7 == 0:
        parts.append('<p onclick="track()"><b>Tags:</b> <i>' + escape(story.category) + "</i></p>")
    trailers = EN_BOILERPLATE if spec.language == "en" else RU_BOILERPLATE
    parts.append(f'<p><a href="https://{spec.host}/">{trailers[j % len(trailers)]}</a></p>')
    return "".join(parts)


@dataclass(frozen=True)
class RenderedItem:
    guid: str
    link: str
    title: str
    published: datetime
    html: str
    category: str
    author: str
    image: str | None


def published_at(corpus: Corpus, spec: FeedSpec, j: int) -> datetime:
    """Round-0 items end at the base time; later items follow a minute apart (before now)."""
    if j < spec.items:
        return corpus.base - timedelta(minutes=spec.step_minutes * (spec.items - 1 - j))
    return corpus.base + timedelta(minutes=j - spec.items + 1)


def newest_published(corpus: Corpus, f: int, round_: int) -> datetime:
    spec = corpus.spec(f)
    return published_at(corpus, spec, mutations(f, round_) * NEW_PER_MUTATION + spec.items - 1)


def feed_items(corpus: Corpus, f: int, round_: int) -> list[RenderedItem]:
    """The items a feed shows in a round, newest first."""
    spec = corpus.spec(f)
    m = mutations(f, round_)
    first = m * NEW_PER_MUTATION
    newest = first + spec.items - 1
    items = []
    for j in range(newest, first - 1, -1):
        story = slot_story(corpus.seed, spec, j)
        published = published_at(corpus, spec, j)
        title = story.title
        if m and j == newest - 2:
            title = f"{title} ({'updated' if spec.language == 'en' else 'обновлено'} {m})"
        items.append(
            RenderedItem(
                guid=story.guid,
                link=story.url,
                title=title,
                published=published,
                html=description_html(spec, story, j),
                category=story.category,
                author=story.author,
                image=story.image,
            )
        )
    return items


def render_feed(corpus: Corpus, f: int, round_: int = 0) -> bytes:
    spec = corpus.spec(f)
    items = feed_items(corpus, f, round_)
    name = f"{AGENCIES[spec.agency].upper()} ({spec.language}) {f}"
    link = f"https://{spec.host}/{spec.language}/"
    if spec.kind == "atom":
        text = _atom(spec, name, link, items)
    elif spec.kind == "rdf":
        text = _rdf(spec, name, link, items)
    else:
        text = _rss(spec, name, link, items, content_encoded=f % 3 == 0)
    prolog = f'<?xml version="1.0" encoding="{spec.encoding}"?>\n'
    if spec.encoding == "utf-8":
        return (prolog + text).encode("utf-8")
    return (prolog + text).encode("cp1251", "xmlcharrefreplace")


def _rss(
    spec: FeedSpec, name: str, link: str, items: list[RenderedItem], *, content_encoded: bool
) -> str:
    out = [
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">\n<channel>\n'
        f"<title>{escape(name)}</title>\n<link>{escape(link)}</link>\n"
        f"<description>{escape(name)} news</description>\n<language>{spec.language}</language>\n"
        f"<lastBuildDate>{format_datetime(items[0].published)}</lastBuildDate>\n<ttl>15</ttl>\n"
    ]
    for it in items:
        first_para = it.html.split("</p>", 1)[0] + "</p>"
        out.append(
            "<item>\n"
            f"<title>{escape(it.title)}</title>\n"
            f"<link>{escape(it.link)}</link>\n"
            f'<guid isPermaLink="false">{escape(it.guid)}</guid>\n'
            f"<pubDate>{format_datetime(it.published)}</pubDate>\n"
            f"<category>{escape(it.category)}</category>\n"
            f"<dc:creator>{escape(it.author)}</dc:creator>\n"
        )
        if content_encoded:
            out.append(f"<description>{escape(first_para)}</description>\n")
            out.append(f"<content:encoded><![CDATA[{it.html}]]></content:encoded>\n")
        else:
            out.append(f"<description>{escape(it.html)}</description>\n")
        if it.image:
            out.append(
                f"<enclosure url={quoteattr(f'https://{spec.host}{it.image}')} "
                'type="image/jpeg" length="48213"/>\n'
            )
        out.append("</item>\n")
    out.append("</channel>\n</rss>\n")
    return "".join(out)


def _atom(spec: FeedSpec, name: str, link: str, items: list[RenderedItem]) -> str:
    out = [
        f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{spec.language}">\n'
        f"<title>{escape(name)}</title>\n<id>{escape(link)}</id>\n"
        f'<link rel="alternate" href={quoteattr(link)}/>\n'
        f"<updated>{items[0].published.isoformat()}</updated>\n"
    ]
    for it in items:
        out.append(
            "<entry>\n"
            f"<title>{escape(it.title)}</title>\n"
            f"<id>tag:{spec.host},2024:{escape(it.guid)}</id>\n"
            f'<link rel="alternate" href={quoteattr(it.link)}/>\n'
            f"<published>{it.published.isoformat()}</published>\n"
            f"<updated>{it.published.isoformat()}</updated>\n"
            f"<author><name>{escape(it.author)}</name></author>\n"
            f"<category term={quoteattr(it.category)}/>\n"
            f'<content type="html">{escape(it.html)}</content>\n'
            "</entry>\n"
        )
    out.append("</feed>\n")
    return "".join(out)


def _rdf(spec: FeedSpec, name: str, link: str, items: list[RenderedItem]) -> str:
    out = [
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
        'xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
        f"<channel rdf:about={quoteattr(link)}>\n<title>{escape(name)}</title>\n"
        f"<link>{escape(link)}</link>\n<description>{escape(name)} news</description>\n"
        f"<dc:language>{spec.language}</dc:language>\n<items><rdf:Seq>\n"
    ]
    out.extend(f"<rdf:li rdf:resource={quoteattr(it.link)}/>\n" for it in items)
    out.append("</rdf:Seq></items>\n</channel>\n")
    for it in items:
        out.append(
            f"<item rdf:about={quoteattr(it.link)}>\n"
            f"<title>{escape(it.title)}</title>\n"
            f"<link>{escape(it.link)}</link>\n"
            f"<description>{escape(it.html)}</description>\n"
            f"<dc:date>{it.published.isoformat()}</dc:date>\n"
            f"<dc:creator>{escape(it.author)}</dc:creator>\n"
            f"<dc:subject>{escape(it.category)}</dc:subject>\n"
            "</item>\n"
        )
    out.append("</rdf:RDF>\n")
    return "".join(out)


def base_time(now: datetime) -> datetime:
    """The corpus's base time for a run: an hour before now, on the minute."""
    return (now.astimezone(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
