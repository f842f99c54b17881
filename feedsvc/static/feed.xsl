<?xml version="1.0" encoding="UTF-8"?>
<!--
  The browser view of feedsvc's Atom and RSS feeds.

  Every Atom and RSS document names this file in an <?xml-stylesheet?>
  instruction; a browser that applies XSLT to the document shows this page
  instead of raw XML, and feed readers ignore the instruction. The live
  service sends browsers an HTML preview instead (feedsvc/preview.py); this
  view remains for static hosts that cannot negotiate (README). XSLT 1.0 only
  (what browsers implement); no disable-output-escaping (Firefox has none),
  so every field is output as text, never as markup. RSS titles and
  descriptions are plain text escaped as HTML (README "Text and HTML in each
  format"): the "text" template undoes that escaping (&lt; &gt; &amp; only,
  what feedsvc writes) so they show as the text they were.
-->
<xsl:stylesheet version="1.0"
    xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:atom="http://www.w3.org/2005/Atom"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:content="http://purl.org/rss/1.0/modules/content/"
    xmlns:fh="http://purl.org/syndication/history/1.0"
    exclude-result-prefixes="atom dc content fh">

  <xsl:output method="html" encoding="UTF-8" indent="yes" doctype-system="about:legacy-compat"/>

  <xsl:template match="/">
    <xsl:choose>
      <xsl:when test="atom:feed">
        <xsl:call-template name="page">
          <xsl:with-param name="kind" select="'Atom'"/>
          <xsl:with-param name="title" select="atom:feed/atom:title"/>
          <xsl:with-param name="subtitle" select="atom:feed/atom:subtitle"/>
          <xsl:with-param name="self" select="atom:feed/atom:link[@rel='self']/@href"/>
          <xsl:with-param name="home" select="atom:feed/atom:link[@rel='alternate']/@href"/>
          <xsl:with-param name="site" select="atom:feed/atom:generator/@uri"/>
          <xsl:with-param name="links" select="atom:feed/atom:link"/>
          <xsl:with-param name="archive" select="boolean(atom:feed/fh:archive)"/>
        </xsl:call-template>
      </xsl:when>
      <xsl:otherwise>
        <xsl:call-template name="page">
          <xsl:with-param name="kind" select="'RSS'"/>
          <xsl:with-param name="title">
            <xsl:call-template name="text"><xsl:with-param name="html" select="rss/channel/title"/></xsl:call-template>
          </xsl:with-param>
          <xsl:with-param name="subtitle">
            <xsl:call-template name="text"><xsl:with-param name="html" select="rss/channel/description"/></xsl:call-template>
          </xsl:with-param>
          <xsl:with-param name="self" select="rss/channel/atom:link[@rel='self']/@href"/>
          <xsl:with-param name="home" select="rss/channel/link"/>
          <xsl:with-param name="site" select="''"/>
          <xsl:with-param name="links" select="rss/channel/atom:link"/>
          <xsl:with-param name="archive" select="boolean(rss/channel/fh:archive)"/>
        </xsl:call-template>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <xsl:template name="page">
    <xsl:param name="kind"/>
    <xsl:param name="title"/>
    <xsl:param name="subtitle"/>
    <xsl:param name="self"/>
    <xsl:param name="home"/>
    <xsl:param name="site"/>
    <xsl:param name="links"/>
    <xsl:param name="archive"/>
    <html>
      <head>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <title><xsl:value-of select="$title"/> (<xsl:value-of select="$kind"/> feed)</title>
        <style>
          body { font: 17px/1.55 system-ui, sans-serif; max-width: 46rem; margin: 0 auto;
                 padding: 1rem; color: #222; }
          a { color: #1a4f8b; }
          .subscribe { background: #fff8e1; border: 1px solid #f0d98c; border-radius: 6px;
                       padding: .8rem 1rem; margin: 1rem 0; }
          .subscribe code { display: block; margin-top: .4rem; padding: .3rem .5rem;
                            background: #fff; border: 1px solid #ddd; word-break: break-all; }
          ol.entries { list-style: none; padding: 0; }
          ol.entries h2 { font-size: 1.2rem; margin-bottom: .2rem; }
          .meta, .nav { color: #555; font-size: .9rem; }
        </style>
      </head>
      <body>
        <header>
          <h1 id="feed-title"><xsl:value-of select="$title"/></h1>
          <xsl:if test="string($subtitle)">
            <p id="feed-subtitle"><xsl:value-of select="$subtitle"/></p>
          </xsl:if>
          <div class="subscribe" id="subscribe">
            <strong>This is a web feed</strong>, also known as an <xsl:value-of select="$kind"/> feed.
            To follow it, copy this address into your feed reader:
            <code id="feed-url"><xsl:value-of select="$self"/></code>
            <xsl:if test="$archive">
              This document is an archive: it will not change. Subscribe to the current feed instead.
            </xsl:if>
          </div>
          <p class="nav">
            <xsl:if test="string($home)">
              <a id="feed-home" href="{$home}">Read on the site</a>
            </xsl:if>
            <xsl:if test="string($site)">
              · <a href="{$site}">Home</a>
            </xsl:if>
            <xsl:for-each select="$links[@rel='current']">
              · <a href="{@href}">Current feed</a>
            </xsl:for-each>
            <xsl:for-each select="$links[@rel='prev-archive']">
              · <a href="{@href}">Older entries</a>
            </xsl:for-each>
            <xsl:for-each select="$links[@rel='next-archive']">
              · <a href="{@href}">Newer entries</a>
            </xsl:for-each>
          </p>
        </header>
        <ol class="entries">
          <xsl:apply-templates select="atom:feed/atom:entry | rss/channel/item"/>
        </ol>
      </body>
    </html>
  </xsl:template>

  <xsl:template match="atom:entry">
    <li class="entry">
      <h2><a href="{atom:link[not(@rel) or @rel='alternate']/@href}"><xsl:value-of select="atom:title"/></a></h2>
      <p class="meta">
        <time datetime="{atom:published}"><xsl:value-of select="substring(atom:published, 1, 10)"/></time>
        <xsl:for-each select="atom:author">
          <xsl:choose>
            <xsl:when test="position() = 1"> · </xsl:when>
            <xsl:otherwise>, </xsl:otherwise>
          </xsl:choose>
          <xsl:value-of select="atom:name"/>
        </xsl:for-each>
      </p>
      <xsl:if test="atom:summary">
        <p class="summary"><xsl:value-of select="atom:summary"/></p>
      </xsl:if>
    </li>
  </xsl:template>

  <xsl:template match="item">
    <li class="entry">
      <h2><a href="{link}"><xsl:call-template name="text"><xsl:with-param name="html" select="title"/></xsl:call-template></a></h2>
      <p class="meta">
        <xsl:value-of select="pubDate"/>
        <xsl:for-each select="dc:creator">
          <xsl:choose>
            <xsl:when test="position() = 1"> · </xsl:when>
            <xsl:otherwise>, </xsl:otherwise>
          </xsl:choose>
          <xsl:value-of select="."/>
        </xsl:for-each>
      </p>
      <!-- Without a summary feedgen puts the content's HTML in <description>. -->
      <xsl:if test="string(description) and string(description) != string(content:encoded)">
        <p class="summary"><xsl:call-template name="text"><xsl:with-param name="html" select="description"/></xsl:call-template></p>
      </xsl:if>
    </li>
  </xsl:template>

  <!-- Plain text that was escaped as HTML, back to the text: &lt; and &gt;
       first, &amp; last, so "&amp;lt;" (the text "&lt;") stays "&lt;". -->
  <xsl:template name="text">
    <xsl:param name="html"/>
    <xsl:call-template name="replace">
      <xsl:with-param name="from" select="'&amp;amp;'"/>
      <xsl:with-param name="to" select="'&amp;'"/>
      <xsl:with-param name="string">
        <xsl:call-template name="replace">
          <xsl:with-param name="from" select="'&amp;gt;'"/>
          <xsl:with-param name="to" select="'&gt;'"/>
          <xsl:with-param name="string">
            <xsl:call-template name="replace">
              <xsl:with-param name="from" select="'&amp;lt;'"/>
              <xsl:with-param name="to" select="'&lt;'"/>
              <xsl:with-param name="string" select="string($html)"/>
            </xsl:call-template>
          </xsl:with-param>
        </xsl:call-template>
      </xsl:with-param>
    </xsl:call-template>
  </xsl:template>

  <xsl:template name="replace">
    <xsl:param name="string"/>
    <xsl:param name="from"/>
    <xsl:param name="to"/>
    <xsl:choose>
      <xsl:when test="contains($string, $from)">
        <xsl:value-of select="substring-before($string, $from)"/>
        <xsl:value-of select="$to"/>
        <xsl:call-template name="replace">
          <xsl:with-param name="string" select="substring-after($string, $from)"/>
          <xsl:with-param name="from" select="$from"/>
          <xsl:with-param name="to" select="$to"/>
        </xsl:call-template>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$string"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
